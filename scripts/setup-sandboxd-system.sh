#!/usr/bin/env bash
# sandboxd's isolation layer needs bubblewrap and libseccomp (loaded by pyseccomp) on the
# host. Idempotent: installs only what is missing, as root; otherwise says what to install.
set -euo pipefail
needed=(bubblewrap libseccomp2)
missing=()
for pkg in "${needed[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "Installing system packages for sandboxd: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "sandboxd needs: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
