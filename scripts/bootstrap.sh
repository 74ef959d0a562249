#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: apt packages, a venv, npm packages.
# Idempotent: each step is skipped when its stamp is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# Mosquitto >= 2.0.21: Debian 12's 2.0.11 can be crashed before authentication (a refused CONNECT that
# reuses a connected client's id, then a reload). bookworm-backports carries 2.0.21; its suite is added
# with the same URIs as the machine's own bookworm entry.
mosquitto_ok() {
  local bin; bin=$(command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto)
  [ -x "$bin" ] || return 1
  local v; v=$("$bin" -h 2>/dev/null | sed -n 's/^mosquitto version \([0-9.]*\).*/\1/p' | head -1)
  [ -n "$v" ] && [ "$(printf '%s\n2.0.21\n' "$v" | sort -V | head -1)" = 2.0.21 ]
}
add_backports() {
  [ -f /etc/apt/sources.list.d/diams-backports.sources ] && return 0
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | awk '{print $2}' | head -1)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | grep -v security | awk '{print $2}' | head -1)
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  echo "bootstrap: adding bookworm-backports ($uri)"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
    | $SUDO tee /etc/apt/sources.list.d/diams-backports.sources >/dev/null
}
if ! mosquitto_ok; then
  add_backports
  echo "bootstrap: apt-get install -t bookworm-backports mosquitto mosquitto-clients (>= 2.0.21)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mosquitto mosquitto-clients >/dev/null
  mosquitto_ok || { echo "bootstrap: mosquitto >= 2.0.21 could not be installed" >&2; exit 1; }
fi

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The clustered broker (RabbitMQ with its MQTT and HTTP-auth plugins), the browser for the console's
# end-to-end tests, and stress-ng for the campaign's CPU load.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || [ -x /usr/sbin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
command -v stress-ng >/dev/null 2>&1 || need_apt+=(stress-ng)
# systemd-analyze verifies the installed units (tests/field/test_install_pi.py); python3-venv is what
# scripts/install-pi.sh makes the service venv with.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${need_apt[*]}"
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
