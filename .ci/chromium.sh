# shellcheck shell=bash
# Source or run: installs Debian's `chromium` (used headless by the call-log browser tests) if missing.
# The tests drive it over the DevTools protocol, so no browser download or driver package is needed.

_bridge_chromium_main() {
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "chromium.sh: installing chromium from apt" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2 \
        || { "${sudo[@]}" apt-get update -qq >&2 \
             && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2; } \
        || { echo "chromium.sh: apt-get install chromium failed" >&2; return 1; }
    command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: chromium still not on PATH" >&2; return 1; }
}

# Called in an && list so a caller's `set -e` cannot cut the function short before it reports.
_bridge_chromium_main && _bridge_chromium_rc=0 || _bridge_chromium_rc=$?
unset -f _bridge_chromium_main
if [ "$_bridge_chromium_rc" -ne 0 ]; then
    unset _bridge_chromium_rc
    return 1 2>/dev/null || exit 1
fi
unset _bridge_chromium_rc
