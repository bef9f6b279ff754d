# shellcheck shell=bash
# Run: `bash .ci/apt_install.sh PACKAGE...` installs Debian packages (sudo when not root), updating the
# package lists only if the first try fails. Used by chromium.sh, sipp.sh and postgres.sh.
set -u
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "apt_install.sh: installing $* from apt" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
    || { "${sudo[@]}" apt-get update -qq >&2 \
         && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; } \
    || { echo "apt_install.sh: apt-get install $* failed" >&2; exit 1; }
