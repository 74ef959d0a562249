# Runs under MicroPython: Agent.run(), the loop examples/main.py uses, for n_readings readings.
# argv: server port device_id secret firmware_hash gateways state_path interval_ms n_readings [min_reauth
# [tls_ca_file]]: with a CA file, MQTT over TLS (the broker's certificate verified against it)
import sys

from device_agent.micropython.agent import Agent

A = sys.argv
H = bytes.fromhex
tls_ca = None
if len(A) > 11:
    with open(A[11], "rb") as f:
        tls_ca = f.read()
agent = Agent(H(A[3]), H(A[4]), H(A[5]), A[6].split(","), A[1], int(A[2]), state_path=A[7], answer_ms=3000,
              min_reauth=float(A[10]) if len(A) > 10 else 10, tls_ca=tls_ca)
count = [0]


def read():
    count[0] += 1
    if count[0] > int(A[9]):
        print('{"authenticated": %d, "hellos": %d, "commands_ok": %d, "no_session_signals": %d}' % (
            agent.stats["authenticated"], agent.stats["hellos"], agent.stats["commands_ok"],
            agent.stats["no_session_signals"]))
        sys.exit(0)
    return b"r%d" % count[0]


agent.run(read, stream="telemetry", interval_s=int(A[8]) / 1000)
