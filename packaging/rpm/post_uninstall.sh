# sfud: after removal ($1 = 0) or upgrade ($1 = 1).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart sfud.service >/dev/null 2>&1 || :
    fi
fi
