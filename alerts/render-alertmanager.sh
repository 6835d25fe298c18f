#!/bin/sh
# Renders alerts/alertmanager.yml with the webhook URLs taken from the environment, then
# runs the command given as arguments (Alertmanager itself, in docker-compose.yml).
# Alertmanager 0.25 expands no variables in its config file; this does it for two URLs:
#
#   MQM_ALERT_WEBHOOK_URL     replaces http://mqm-alert-webhook.invalid/
#   MQM_WATCHDOG_WEBHOOK_URL  replaces http://mqm-watchdog-webhook.invalid/
#                             (default: MQM_ALERT_WEBHOOK_URL)
#   MQM_AM_TEMPLATE           the file read  (default /etc/alertmanager/alertmanager.yml)
#   MQM_AM_CONFIG             the file written (default /alertmanager/alertmanager.yml);
#                             pass it to Alertmanager's --config.file
#
# A URL must be http(s) without spaces or quotes. An unset variable leaves its
# placeholder, which never resolves (.invalid): notifications fail in Alertmanager's
# log rather than going anywhere unexpected. POSIX sh and awk only (the busybox of the
# prom/alertmanager image).
set -eu

template=${MQM_AM_TEMPLATE:-/etc/alertmanager/alertmanager.yml}
config=${MQM_AM_CONFIG:-/alertmanager/alertmanager.yml}
alert_url=${MQM_ALERT_WEBHOOK_URL:-}
watchdog_url=${MQM_WATCHDOG_WEBHOOK_URL:-$alert_url}

check_url() {
    case $2 in
        "") echo "render-alertmanager: $1 is not set; its receivers post nowhere" >&2 ;;
        http://*|https://*) ;;
        *) echo "render-alertmanager: $1 must start with http:// or https://" >&2; exit 2 ;;
    esac
    case $2 in
        *[[:space:]]*|*\"*|*\'*|*\\*)
            echo "render-alertmanager: $1 must not hold spaces, quotes or backslashes" >&2
            exit 2 ;;
    esac
}
check_url MQM_ALERT_WEBHOOK_URL "$alert_url"
check_url MQM_WATCHDOG_WEBHOOK_URL "$watchdog_url"

# Literal replacement (awk's gsub would read & and \ in the URL as special).
MQM_R_ALERT=$alert_url MQM_R_WATCHDOG=$watchdog_url awk '
function swap(line, from, to,    out, i) {
    if (to == "") return line
    out = ""
    while ((i = index(line, from)) > 0) {
        out = out substr(line, 1, i - 1) to
        line = substr(line, i + length(from))
    }
    return out line
}
{
    line = swap($0, "http://mqm-alert-webhook.invalid/", ENVIRON["MQM_R_ALERT"])
    print swap(line, "http://mqm-watchdog-webhook.invalid/", ENVIRON["MQM_R_WATCHDOG"])
}' "$template" > "$config.tmp"
mv "$config.tmp" "$config"
echo "render-alertmanager: wrote $config" >&2

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
