#!/usr/bin/env bash
# Debian packages the project needs on the host: bubblewrap (the sandbox), Node.js with npm
# (front-end packages, the JavaScript/TypeScript kernels) and venv for the system Python (the
# sandbox's Python environment); with the argument `test`, also Chromium for the browser tests.
# Installed when we are root and apt-get exists; otherwise we say exactly what to install and
# stop. Fast and silent when everything is there.
set -euo pipefail

missing=()
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

command -v bwrap >/dev/null || have_deb bubblewrap || missing+=(bubblewrap)
# setpriv and prlimit start each sandbox (Debian: util-linux, essential; elsewhere maybe not).
command -v setpriv >/dev/null && command -v prlimit >/dev/null || missing+=(util-linux)
# Node may come from Debian (nodejs + npm) or from NodeSource (nodejs bundles npm): check the
# commands, not the package names, so we never ask apt for an npm that would conflict.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
/usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ "${1:-}" = "test" ]; then
  # Debian's Chromium, driven by Playwright (a browser download of Playwright's own is not
  # needed, nor possible offline); a font so pages render text.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  have_deb fonts-dejavu-core || missing+=(fonts-dejavu-core)
fi

[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them (e.g. sudo apt-get install ${missing[*]}) and run make again." >&2
  exit 1
fi
