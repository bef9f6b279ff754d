# shellcheck shell=bash
# Run: installs Debian's `sip-tester` (it provides `sipp`, the real SIP peer the tests/sip scenario
# tests place calls with) if `sipp` is missing.
command -v sipp >/dev/null 2>&1 && exit 0
bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" sip-tester || exit 1
command -v sipp >/dev/null 2>&1 || { echo "sipp.sh: sipp still not on PATH" >&2; exit 1; }
