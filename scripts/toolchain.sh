#!/usr/bin/env bash
# The compilers this package builds with: g++ and make for the addon (node-gyp), cc for the
# bench's C reference, gcc and binutils (objcopy, objdump) for the own-guest example's guest.
#
#   scripts/toolchain.sh install   Debian's packages for whichever is missing (apt-get); nothing
#                                  to do when every tool is on PATH
set -euo pipefail

die() { echo "toolchain.sh: $*" >&2; exit 1; }

[ "${1:-}" = install ] || die "usage: scripts/toolchain.sh install"
missing=()
for tool in gcc g++ make objcopy objdump python3; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "toolchain.sh: gcc, g++, make, binutils and python3 are installed ($(gcc --version | head -n1))"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "missing ${missing[*]}; installing them needs root (apt-get): run as root or install them yourself"
command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with"
echo "toolchain.sh: installing Debian's build-essential, binutils and python3 (missing: ${missing[*]})"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential binutils python3 >/dev/null
for tool in "${missing[@]}"; do command -v "$tool" >/dev/null || die "apt-get ran but there is no $tool on PATH"; done
echo "toolchain.sh: installed ($(gcc --version | head -n1))"
