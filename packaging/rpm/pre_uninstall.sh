# sfud: before removal ($1 = 0) or upgrade ($1 = 1).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now sfud.service >/dev/null 2>&1 || :
fi
