# Runs under MicroPython: the agent answers a re-key over MQTT (docs/PROTOCOL.md 2.3) on its re-key
# topics, with rekey_files given; ends after the exchange committed S' (or after `seconds`).
# argv: server port device_id key_path static_path firmware_hash gateway state_path seconds
# Prints one JSON line: whether it re-keyed, the refusals counted, and the password (and epoch) of its
# next login.
import sys
import time

from device_agent.core import keys
from device_agent.micropython.agent import Agent

A = sys.argv
H = bytes.fromhex
with open(A[4]) as f:
    secret = H(f.read().strip())
agent = Agent(H(A[3]), secret, H(A[6]), [A[7]], A[1], int(A[2]), state_path=A[8], answer_ms=60000,
              rekey_files=(A[4], A[5]))
agent.connect()
print('{"ready": true}')
deadline = time.time() + int(A[9])
while time.time() < deadline and not agent.stats.get("rekeyed"):
    agent.poll(200)
refused = [k for k in agent.stats if k.startswith("rekey_refused_")]
e = agent.policy.login_epoch
print('{"rekeyed": %d, "refused": [%s], "password": "%s", "login_epoch": %d}' % (
    agent.stats.get("rekeyed", 0), ", ".join('"%s"' % k for k in refused),
    keys.broker_password(agent._secret, agent.device_id, e), e))
