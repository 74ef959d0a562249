# Runs under MicroPython: the device side of a re-keying exchange (device_agent/core/rekey.py with
# the pure X25519), from the pinned vector's inputs.
#
# argv: device_id secret static_private ed_private device_nonce init confirm [mode] (hex).
# Prints one JSON line: the REPLY, S' and DONE (to compare with the vector), the time of one exchange in ms
# (ticks_ms, mean of 3) and resident (what importing the re-keying modules keeps allocated).
# mode "cap N": run one exchange with only about N bytes of heap free (the rest ballast) -> ok; the
# smallest such N is the exchange's peak heap as the allocator sees it (the X25519 ladder allocates
# far more in total, but its big integers die at once: a gc-disabled total would not fit any heap).
import gc

gc.collect()
BEFORE = gc.mem_alloc()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from device_agent.core import rekey  # noqa: E402
from device_agent.core.x25519 import x25519  # noqa: E402

gc.collect()
RESIDENT = gc.mem_alloc() - BEFORE

H = bytes.fromhex
A = sys.argv
DID, S, DS, ED, ND, INIT, CONFIRM = (H(a) for a in A[1:8])


def exchange():
    values = [ED, ND]
    role = rekey.DeviceRekey(DID, S, DS, x25519, lambda n: values.pop(0))
    reply = role.init(INIT)
    s2 = role.confirm(CONFIRM)
    return reply, s2, role.done()


def with_free(target):
    ballast = []
    gc.collect()
    size = 4096
    while gc.mem_free() > target + 64:
        free = gc.mem_free()
        if free - target < size + 64:
            size = max(16, (free - target) // 2)
        try:
            ballast.append(bytearray(size))
        except MemoryError:
            break
    gc.collect()
    free = gc.mem_free()
    try:
        exchange()
        ok = True
    except MemoryError:
        ok = False
    del ballast
    gc.collect()
    return ok, free


if len(A) > 9 and A[8] == "cap":
    ok, free = with_free(int(A[9]))
    print(json.dumps({"ok": ok, "free": free}))
else:
    reply, s2, done = exchange()
    runs = 3
    t0 = time.ticks_ms()
    for _ in range(runs):
        exchange()
    ms = time.ticks_diff(time.ticks_ms(), t0) / runs
    print(json.dumps({"reply": reply.hex(), "new_secret": s2.hex(), "done": done.hex(), "ms": ms,
                      "resident": RESIDENT}))
