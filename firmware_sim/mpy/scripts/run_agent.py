# Runs under MicroPython: the MicroPython agent against a real broker and gateway.
#
# argv: server port device_id secret firmware_hash gateways(comma-separated) state_path answer_ms n_data
# Prints JSON lines: the handshake result; a second, measured handshake (gc disabled around
# authenticate(): every byte allocated, freed or not, i.e. an upper bound of its peak, MQTT I/O and
# the counter file write included); then the data sent, then the commands received (waits for one
# valid command, 10 s).
import gc
import sys
import time

gc.collect()
_before_import = gc.mem_alloc()
from device_agent.micropython.agent import Agent  # noqa: E402

gc.collect()
print('{"import_heap": %d}' % (gc.mem_alloc() - _before_import))

A = sys.argv
H = bytes.fromhex
commands = []

agent = Agent(H(A[3]), H(A[4]), H(A[5]), A[6].split(","), A[1], int(A[2]), state_path=A[7],
              answer_ms=int(A[8]), on_command=lambda name, payload: commands.append((name, payload)))
agent.connect()


def measured_handshake():
    gc.collect()
    free_before = gc.mem_free()
    gc.disable()
    before = gc.mem_alloc()
    ok = agent.authenticate()
    total = gc.mem_alloc() - before
    gc.enable()
    return ok, total, free_before


ok = agent.authenticate()  # the first one may take several attempts (failover, epoch hint): gc on
print('{"authenticated": %s, "gateway": "%s"}' % ("true" if ok else "false", agent.gateway or ""))
if ok:
    # The measured handshake: a re-authentication with the current gateway, with the reserved block
    # marked used up so that the counter file write (the worst case, once per block) is inside too.
    policy = agent.policy
    for key in policy.next:
        policy.reserved[key] = policy.next[key] - 1
    ok2, total, free = measured_handshake()
    print('{"reauthenticated": %s, "heap_alloc_total": %d, "free_before": %d}' % (
        "true" if ok2 else "false", total, free))
    sent = 0
    for i in range(int(A[9])):
        sent += agent.publish("telemetry", b'{"n":%d}' % i)
    print('{"data_sent": %d}' % sent)
    deadline = time.ticks_add(time.ticks_ms(), 10000)
    while not commands and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        agent.poll(100)
    print('{"commands": [%s], "commands_ok": %d, "commands_dropped": %d, "hellos": %d, "epoch": %d}' % (
        ", ".join('["%s", "%s"]' % (n, p.hex()) for n, p in commands), agent.stats["commands_ok"],
        agent.stats["commands_dropped"], agent.stats["hellos"], agent.policy.epoch))
agent.client.disconnect()
