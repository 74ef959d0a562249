#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: apt packages, a venv, npm packages.
# Idempotent: each step is skipped when its stamp is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ "${DIAMS_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then need_apt+=(chromium chromium-driver); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  $PY -m venv .venv
fi
if [ ! -f .venv/.stamp ] || [ pyproject.toml -nt .venv/.stamp ]; then
  echo "bootstrap: pip install -e .[dev]"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.stamp
fi
# umqtt.simple for the MicroPython agent (SHA-256 pinned, into the git-ignored .vendor/)
.venv/bin/python scripts/fetch_umqtt.py

if [ -f ledger_bridge/package.json ]; then
  if [ ! -f ledger_bridge/node_modules/.stamp ] || [ ledger_bridge/package-lock.json -nt ledger_bridge/node_modules/.stamp ]; then
    echo "bootstrap: npm ci (solc, OpenZeppelin, anvil)"
    (cd ledger_bridge && npm ci --no-audit --no-fund --loglevel=error)
    touch ledger_bridge/node_modules/.stamp
  fi
fi
echo "bootstrap: ready"
