#!/bin/sh
# Renew the devid certificates that are due: a cron job. Arguments go to `devid rotate`.
#
#   # /etc/cron.d/devid-rotate: every day at 03:17, as the user owning DEVID_HOME
#   17 3 * * *  devid  /usr/local/lib/devid/rotate-cron.sh --exec 'systemctl reload mosquitto'
#
# Settings (environment):
#   DEVID          the devid command    (devid, looked up in PATH, /usr/local/bin, ~/.local/bin:
#                  cron's PATH is only /usr/bin:/bin)
#   ROTATE_BEFORE  renew when this much is left           (33%; or a duration such as 30d)
#   ROTATE_JITTER  random delay first, spreads the fleet  (10m)
#   ROTATE_LOCK    lock file against overlapping runs     ($DEVID_HOME/rotate.lock)
#   ROTATE_LOG     syslog (via logger, tag devid-rotate) or stderr    (syslog)
# Exit code: devid's (0 renewed or nothing due; 1 check failed, 2 bad input, 3 environment
# or --exec failed, 4 conflict); 0 without running when another run holds the lock;
# 3 when the lock file cannot be opened or the devid command cannot be found.
set -u

if [ -z "${DEVID:-}" ]; then
    PATH=$PATH:/usr/local/bin:${HOME:-/nonexistent}/.local/bin
    DEVID=devid
fi
LOCK=${ROTATE_LOCK:-${DEVID_HOME:-$HOME/.local/share/devid}/rotate.lock}

log() { # PRIORITY MESSAGE; falls back to stderr where there is no syslog
    if [ "${ROTATE_LOG:-syslog}" = syslog ] &&
        logger -t devid-rotate -p "user.$1" -- "$2" 2>/dev/null; then
        return
    fi
    printf 'devid-rotate: %s\n' "$2" >&2
}

if ! command -v "$DEVID" >/dev/null 2>&1; then
    log err "cannot find the devid command ($DEVID); set DEVID=/path/to/devid"
    exit 3
fi
if ! command exec 9>>"$LOCK"; then
    log err "cannot open the lock file $LOCK"
    exit 3
fi
if ! flock -n 9; then
    log warning "another rotation holds $LOCK; not starting"
    exit 0
fi

output=$("$DEVID" rotate --before "${ROTATE_BEFORE:-33%}" --jitter "${ROTATE_JITTER:-10m}" "$@" 2>&1)
status=$?
priority=info
[ "$status" -eq 0 ] || priority=err
printf '%s\n' "$output" | while IFS= read -r line; do
    [ -n "$line" ] && log "$priority" "$line"
done
[ "$status" -eq 0 ] || log err "devid rotate failed with exit code $status"
exit "$status"
