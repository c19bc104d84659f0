# sfud: before the files are installed, so that they can belong to sfud.
# The same entry as /usr/lib/sysusers.d/sfud.conf (installed by this package).
systemd-sysusers --replace=/usr/lib/sysusers.d/sfud.conf - <<'SYSUSERS'
u sfud - "sfud WebRTC SFU" /var/lib/sfud -
SYSUSERS
