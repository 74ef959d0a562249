#!/usr/bin/env bash
# Installs the DIAMS device agent or gateway on Raspberry Pi OS / Debian 12 (bookworm), as
# docs/AGENT.md ("Install on a Raspberry Pi") and docs/GATEWAY.md ("Install on Debian 12") describe.
# tests/field/test_install_pi.py runs this very script into a temporary root and checks what it made.
#
#   sudo scripts/install-pi.sh agent --config factory/<id>.agent.toml --key factory/<id>.key
#   sudo scripts/install-pi.sh gateway
#
# Options (before or after the role):
#   --root DIR     install the files under DIR instead of / (tests, image builds). The system users are
#                  always made on the running system: they must exist wherever the files are used.
#   --src DIR      the DIAMS checkout or unpacked release to install (default: this script's checkout)
#   --python EXE   the interpreter for the venv (default /usr/bin/python3; bookworm ships 3.11)
#
# Layout (paths below are relative to the root):
#   /opt/diams/.venv                          root:root        0755  venv, `pip install SRC[agent|gateway]`
#   agent:
#   /etc/diams-agent                          root:diams-agent 0750
#   /etc/diams-agent/agent.toml               root:diams-agent 0640  key_file/state_file made absolute
#   /var/lib/diams-agent                      diams-agent      0700  (the unit's StateDirectory)
#   /var/lib/diams-agent/secret.key           diams-agent      0600
#   /etc/systemd/system/diams-agent.service   root:root        0644
#   gateway:
#   /etc/diams-gateway                        root:diams-gateway 0750
#   /etc/diams-gateway/gateway.toml           root:diams-gateway 0640  (from systemd/gateway.example.toml)
#   /etc/diams-gateway/credentials            root:root        0700  gateway.key, broker.password,
#                                                                    ledger.passphrase, ledger.keystore (0600)
#   /var/lib/diams-gateway                    diams-gateway    0700
#   /var/lib/diams-broker                     diams-gateway:mosquitto 0750, passwords and acl 0640
#   /etc/systemd/system/diams-gateway.service root:root        0644
#
# Existing configuration, keys and credentials are never overwritten (re-running upgrades the venv and
# the unit only). Nothing secret is printed.
set -euo pipefail

ROOT=""
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
ROLE=""
CONFIG=""
KEY=""

die() { echo "install-pi: $*" >&2; exit 2; }
usage() { sed -n '2,13p' "$0" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    agent|gateway) ROLE=$1 ;;
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    --src) SRC=${2:?--src needs a directory}; shift ;;
    --python) PY=${2:?--python needs an interpreter}; shift ;;
    --config) CONFIG=${2:?--config needs a file}; shift ;;
    --key) KEY=${2:?--key needs a file}; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[ -n "$ROLE" ] || usage
[ "$(id -u)" = 0 ] || die "run as root (sudo): it makes system users and root-owned directories"
ROOT=${ROOT%/}
[ -f "$SRC/pyproject.toml" ] || die "$SRC is not a DIAMS checkout (no pyproject.toml)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than Python 3.11"
"$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY has no venv module: apt-get install python3-venv"

VENV=/opt/diams/.venv

system_user() {  # NAME [SUPPLEMENTARY_GROUP]
  if ! getent passwd "$1" >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$1"
    echo "install-pi: system user $1 created"
  fi
  if [ -n "${2:-}" ]; then
    getent group "$2" >/dev/null || die "group $2 is missing (install the $2 package first)"
    usermod -a -G "$2" "$1"
  fi
}

install_venv() {  # EXTRA
  install -d -o root -g root -m 0755 "$ROOT/opt" "$ROOT/opt/diams"
  local fresh=1
  if [ -x "$ROOT$VENV/bin/python" ]; then fresh=0; else "$PY" -m venv "$ROOT$VENV"; fi
  # A non-editable install: the service runs the copy in the venv, not the checkout. (pip through the
  # interpreter: under --root the scripts' first lines name the target path.)
  local pip=("$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location)
  "${pip[@]}" "$SRC[$1]"
  # Same version number, new code (a re-run after git pull): replace the package itself.
  [ "$fresh" = 1 ] || "${pip[@]}" --no-deps --force-reinstall "$SRC"
  if [ -n "$ROOT" ]; then
    # Entry points name the interpreter by its path at install time; make it the path on the target.
    grep -lsF "#!$ROOT$VENV/bin/python" "$ROOT$VENV"/bin/* | while read -r f; do
      sed -i "1s|^#!$ROOT$VENV/|#!$VENV/|" "$f"
    done
  fi
  chown -R root:root "$ROOT/opt/diams"
  chmod -R go-w "$ROOT/opt/diams"
}

install_unit() {  # NAME
  install -d -o root -g root -m 0755 "$ROOT/etc" "$ROOT/etc/systemd" "$ROOT/etc/systemd/system"
  install -o root -g root -m 0644 "$SRC/systemd/$1.service" "$ROOT/etc/systemd/system/$1.service"
}

install_agent() {
  [ -n "$CONFIG" ] && [ -n "$KEY" ] || die "agent needs --config <id>.agent.toml and --key <id>.key (from diams-agent provision)"
  [ -f "$CONFIG" ] || die "no such file: $CONFIG"
  [ -f "$KEY" ] || die "no such file: $KEY"
  system_user diams-agent
  install_venv agent
  install -d -o root -g root -m 0755 "$ROOT/etc" "$ROOT/var" "$ROOT/var/lib"
  install -d -o root -g diams-agent -m 0750 "$ROOT/etc/diams-agent"
  install -d -o diams-agent -g diams-agent -m 0700 "$ROOT/var/lib/diams-agent"
  if [ ! -e "$ROOT/etc/diams-agent/agent.toml" ]; then
    # The factory file names its key and state beside itself; on the device they live in the state
    # directory (the only place the unit may write), by absolute path.
    local tmp; tmp=$(mktemp)
    sed -e 's|^key_file *=.*|key_file = "/var/lib/diams-agent/secret.key"|' \
        -e 's|^state_file *=.*|state_file = "/var/lib/diams-agent/state.json"|' "$CONFIG" > "$tmp"
    grep -q '^key_file = "/var/lib/diams-agent/secret.key"$' "$tmp" || die "$CONFIG has no key_file line"
    grep -q '^state_file = "/var/lib/diams-agent/state.json"$' "$tmp" || die "$CONFIG has no state_file line"
    install -o root -g diams-agent -m 0640 "$tmp" "$ROOT/etc/diams-agent/agent.toml"
    rm -f "$tmp"
  else
    echo "install-pi: keeping the existing /etc/diams-agent/agent.toml"
  fi
  if [ ! -e "$ROOT/var/lib/diams-agent/secret.key" ]; then
    install -o diams-agent -g diams-agent -m 0600 "$KEY" "$ROOT/var/lib/diams-agent/secret.key"
  else
    echo "install-pi: keeping the existing /var/lib/diams-agent/secret.key"
  fi
  install_unit diams-agent
  echo "install-pi: agent installed; start it with: systemctl daemon-reload && systemctl enable --now diams-agent"
}

install_gateway() {
  system_user diams-gateway mosquitto
  install_venv gateway
  install -d -o root -g root -m 0755 "$ROOT/etc" "$ROOT/var" "$ROOT/var/lib"
  install -d -o root -g diams-gateway -m 0750 "$ROOT/etc/diams-gateway"
  install -d -o root -g root -m 0700 "$ROOT/etc/diams-gateway/credentials"
  install -d -o diams-gateway -g diams-gateway -m 0700 "$ROOT/var/lib/diams-gateway"
  install -d -o diams-gateway -g mosquitto -m 0750 "$ROOT/var/lib/diams-broker"
  for f in passwords acl; do
    [ -e "$ROOT/var/lib/diams-broker/$f" ] || install -o diams-gateway -g mosquitto -m 0640 /dev/null "$ROOT/var/lib/diams-broker/$f"
  done
  if [ ! -e "$ROOT/etc/diams-gateway/gateway.toml" ]; then
    install -o root -g diams-gateway -m 0640 "$SRC/systemd/gateway.example.toml" "$ROOT/etc/diams-gateway/gateway.toml"
  fi
  local creds="$ROOT/etc/diams-gateway/credentials"
  if [ ! -e "$creds/gateway.key" ]; then
    # prints the X25519 public key (for register-gateway); refuses to overwrite
    "$ROOT$VENV/bin/python" -m gateway.cli keys --out "$creds"
  fi
  if [ ! -e "$creds/ledger.passphrase" ]; then
    (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$creds/ledger.passphrase")
  fi
  if [ ! -e "$creds/ledger.keystore" ]; then
    "$ROOT$VENV/bin/python" -m ledger_bridge.cli --passphrase-file "$creds/ledger.passphrase" \
      keys create --out "$creds/ledger.keystore" --label "gateway-$(hostname -s)"
  fi
  chown root:root "$creds"/*
  chmod 0600 "$creds"/*
  install_unit diams-gateway
  echo "install-pi: gateway installed; edit /etc/diams-gateway/gateway.toml, then:"
  echo "  CREDENTIALS_DIRECTORY=/etc/diams-gateway/credentials $VENV/bin/diams-gateway check-config --config /etc/diams-gateway/gateway.toml"
  echo "  systemctl daemon-reload && systemctl enable --now diams-gateway"
}

case "$ROLE" in
  agent) install_agent ;;
  gateway) install_gateway ;;
esac
