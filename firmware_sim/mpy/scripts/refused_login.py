# Runs under MicroPython: the MicroPython agent against a broker that refuses its login.
#
# argv: server port device_id secret firmware_hash state_path
# The policy's random source is pinned to the top of the jitter window (b"\xff" * n), so the next
# dial's delay is the window's ceiling: the long refused-login backoff (15 * backoff_cap at most,
# backoff_cap on the first refusal) and not the 1 ms reconnect backoff. Prints one JSON line.
import time

from device_agent.micropython.agent import Agent

A = __import__("sys").argv
H = bytes.fromhex
agent = Agent(H(A[3]), H(A[4]), H(A[5]), ["gw-a"], A[1], int(A[2]), state_path=A[6],
              reconnect_base_ms=1, backoff_cap_ms=600000)
agent.policy._random = lambda n: b"\xff" * n
try:
    agent.connect()
    refused = False
except OSError:
    refused = True
p = agent.policy
print('{"refused": %s, "login_refused": %d, "probes": %d, "login_epoch": %d, "next_dial_in": %.3f}' % (
    "true" if refused else "false", p.stats.get("login_refused", 0), p.stats.get("login_epoch_probes", 0),
    p.login_epoch, p.wake_at() - time.time()))
