#!/usr/bin/env bash
# Installs the given Debian packages that are not installed yet (apt-get, no recommends); the tool
# scripts that need more than the default build (Slurm, Open MPI, the PyTorch peer) call it.
#   tools/apt_install.sh PACKAGE ...
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
echo "installing ${missing[*]}" >&2
$sudo_cmd apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
