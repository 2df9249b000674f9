#!/usr/bin/env bash
# Installs the Debian packages attnlab builds with (when missing), configures and builds it into
# build/, and puts the corpus in place. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# oneDNN's CMake package config looks for OpenCL even for the CPU engine: ocl-icd-opencl-dev is only
# a recommendation of libdnnl-dev, so it is named here (apt-get runs without recommendations).
packages=(build-essential cmake git curl libdnnl-dev ocl-icd-opencl-dev libyaml-cpp-dev libspdlog-dev
          libcli11-dev libhdf5-dev catch2 python3-h5py python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j "$(nproc)"
bash "$root/data/fetch.sh"
