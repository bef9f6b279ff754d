# shellcheck shell=bash
# Source or run: installs Debian's `sip-tester` (it provides `sipp`, the real SIP peer the tests/sip
# scenario tests place calls with) if `sipp` is missing.

_bridge_sipp_main() {
    if command -v sipp >/dev/null 2>&1; then
        return 0
    fi
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "sipp.sh: installing sip-tester from apt" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >&2 \
        || { "${sudo[@]}" apt-get update -qq >&2 \
             && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >&2; } \
        || { echo "sipp.sh: apt-get install sip-tester failed" >&2; return 1; }
    command -v sipp >/dev/null 2>&1 || { echo "sipp.sh: sipp still not on PATH" >&2; return 1; }
}

# Called in an && list so a caller's `set -e` cannot cut the function short before it reports.
_bridge_sipp_main && _bridge_sipp_rc=0 || _bridge_sipp_rc=$?
unset -f _bridge_sipp_main
if [ "$_bridge_sipp_rc" -ne 0 ]; then
    unset _bridge_sipp_rc
    return 1 2>/dev/null || exit 1
fi
unset _bridge_sipp_rc
