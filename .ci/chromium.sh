# shellcheck shell=bash
# Run: installs Debian's `chromium` (used headless by the call-log and softphone browser tests) if
# missing. The tests drive it over the DevTools protocol, so no browser download or driver is needed.
command -v chromium >/dev/null 2>&1 && exit 0
bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" chromium fonts-dejavu-core || exit 1
command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: chromium still not on PATH" >&2; exit 1; }
