# Runs under MicroPython: the device role behind a line protocol on stdin/stdout, so a CPython
# gateway role can drive a real handshake across a process boundary. Nonces come from os.urandom.
#
# Requests, one per line (binary values as hex):
#   init <device_id> <gateway_id> <gateway_key> <epoch>
#   hello <counter>            -> {"send": hex}
#   recv <message>             -> {"send": hex | null, "event": class name, "reason": str | null}
#   open <stream> <message>    -> {"payload": hex | null, "reason": str | null}
#   seal <stream> <payload>    -> {"send": hex}
#   quit
import json
import os
import sys

from device_agent.core import device

H = bytes.fromhex


def reply(**fields):
    print(json.dumps(fields))


def main():
    role = None
    session = None
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        words = line.split()
        if not words:
            continue
        op = words[0]
        if op == "quit":
            return
        if op == "init":
            role = device.DeviceRole(H(words[1]), words[2].encode(), H(words[3]), int(words[4]))
            reply(state=role.state)
        elif op == "hello":
            reply(send=role.hello(int(words[1]), os.urandom(8)).hex())
        elif op == "recv":
            out, event = role.receive(H(words[1]), 0)
            session = getattr(event, "session", None) or session
            reply(send=out.hex() if out else None, event=type(event).__name__,
                  reason=getattr(event, "reason", None), state=role.state)
        elif op == "open":
            payload, reason = session.open(words[1].encode(), H(words[2]), 0)
            reply(payload=payload.hex() if payload is not None else None, reason=reason)
        elif op == "seal":
            reply(send=session.seal(words[1].encode(), H(words[2])).hex())
        else:
            reply(error="unknown request " + op)


main()
