# Runs under MicroPython: the heap one device-side handshake needs, three ways.
#
# argv: device_id gateway_id gateway_key epoch counter device_nonce challenge result command
# (hex, from tests/vectors/handshake_transcript.json; passed as arguments so that no JSON parsing
# sits in the heap being measured). "handshake" = DeviceRole() + hello + CHALLENGE -> PROOF +
# RESULT -> Authenticated + one COMMAND opened + one DATA sealed.
#
#   alloc_total  gc disabled, mem_alloc after minus before: every byte the handshake allocates,
#                freed or not; an upper bound of its peak.
#   live_max     gc.collect() after each step, mem_alloc minus the starting point: what the role
#                holds between messages; a lower bound of the peak.
#   resident     what importing the device modules keeps allocated (bytecode too, unless frozen).
#   min_free     the smallest free heap (the rest filled with ballast, gc enabled) with which the
#                handshake still succeeds: the peak as the allocator sees it.
# Figures are in bytes of this port's heap (64-bit: 16-byte blocks, 8-byte words; a 32-bit board
# needs less for the same objects). argv[10]: "measure" (default) prints the three; "once" runs one
# handshake (to find the smallest -X heapsize); "cap N" runs one with only N bytes of heap free.
import gc

gc.collect()
BEFORE_IMPORT = gc.mem_alloc()

import json  # noqa: E402
import sys  # noqa: E402

from device_agent.core import device  # noqa: E402

gc.collect()
RESIDENT = gc.mem_alloc() - BEFORE_IMPORT  # the loaded core: module objects, functions, bytecode

H = bytes.fromhex
A = sys.argv
DID, GW, KDG, EPOCH, COUNTER = H(A[1]), A[2].encode(), H(A[3]), int(A[4]), int(A[5])
NONCE, CHALLENGE, RESULT, COMMAND = H(A[6]), H(A[7]), H(A[8]), H(A[9])


def handshake(sample=None):
    dev = device.DeviceRole(DID, GW, KDG, EPOCH)
    sample and sample()
    hello = dev.hello(COUNTER, NONCE)
    sample and sample()
    proof, _ = dev.receive(CHALLENGE, 0)
    sample and sample()
    _, done = dev.receive(RESULT, 0)
    sample and sample()
    payload, _ = done.session.open(b"config", COMMAND, 0)
    data = done.session.seal(b"telemetry", b'{"t":21.5}')
    sample and sample()
    return hello, proof, payload, data


def alloc_total():
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    handshake()
    after = gc.mem_alloc()
    gc.enable()
    return after - before


def live_max():
    peak = [0]
    gc.collect()
    base = gc.mem_alloc()

    def sample():
        gc.collect()
        peak[0] = max(peak[0], gc.mem_alloc() - base)

    out = handshake(sample)
    del out
    return peak[0]


def succeeds_with_free(target):
    """Fill the heap until about ``target`` bytes are free, try a handshake -> (ok, free)."""
    ballast = [None] * 64
    gc.collect()
    i, size = 0, gc.mem_free()
    while i < 64 and size >= 16:
        want = gc.mem_free() - target
        if want < 16:
            break
        try:
            ballast[i] = bytearray(min(size, want))
            i += 1
        except MemoryError:
            size //= 2
    gc.collect()
    free = gc.mem_free()
    try:
        ok = handshake()[2] == b"interval=60"
    except MemoryError:
        ok = False
    ballast = None
    gc.collect()
    return ok, free


def min_free(high):
    lo, hi = 0, high  # invariant: hi succeeds (checked), lo fails or is untested
    ok, free = succeeds_with_free(hi)
    if not ok:
        return -1
    best = free
    while hi - lo > 16:
        mid = (lo + hi) // 2
        ok, free = succeeds_with_free(mid)
        if ok:
            hi, best = mid, min(best, free)
        else:
            lo = mid
    return best


def main():
    gc.collect()
    mode = A[10] if len(A) > 10 else "measure"
    if mode == "once":  # under -X heapsize=N: does one handshake fit beside the loaded core?
        ok = handshake()[2] == b"interval=60"
        print(json.dumps({"ok": ok}))
    elif mode == "cap":  # fill the heap but A[11] bytes, then one handshake with gc enabled
        ok, free = succeeds_with_free(int(A[11]))
        print(json.dumps({"ok": ok, "free": free}))
    else:
        first = handshake()
        total = alloc_total()
        print(json.dumps({"alloc_total": total, "live_max": live_max(), "min_free": min_free(total + 4096),
                          "resident": RESIDENT, "output": [x.hex() for x in first]}))


main()
