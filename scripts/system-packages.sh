#!/usr/bin/env bash
# Debian packages the project needs on the host. Installed when we are root and they are
# missing; otherwise we say exactly what to install and stop.
set -euo pipefail
needed=(bubblewrap)
missing=()
for pkg in "${needed[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them (e.g. sudo apt-get install ${missing[*]}) and run make again." >&2
  exit 1
fi
