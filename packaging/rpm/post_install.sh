# sfud: after install or upgrade ($1 = 1 on first install).
systemd-tmpfiles --create sfud.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        # Enabled or not as the distribution's presets say (Fedora: not).
        systemctl --no-reload preset sfud.service >/dev/null 2>&1 || :
    fi
fi
