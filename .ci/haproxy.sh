# shellcheck shell=bash
# Run: installs Debian's `haproxy` (the real load balancer the multi-replica test puts in front of
# three `bridge serve` processes) if missing. The test runs its own instance; nothing is started here.
command -v haproxy >/dev/null 2>&1 && exit 0
bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" haproxy || exit 1
command -v haproxy >/dev/null 2>&1 || { echo "haproxy.sh: haproxy still not on PATH" >&2; exit 1; }
