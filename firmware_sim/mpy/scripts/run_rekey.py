# Runs under MicroPython: device_agent.micropython.rekey over stdin/stdout.
# argv: "device-key" static_path  -> prints the public key (made once)
#       device_id(hex) key_path static_path  -> one exchange (hex lines), prints "committed" or "refused R"
import sys

from device_agent.core.rekey import RekeyError
from device_agent.micropython import rekey

if sys.argv[1] == "device-key":
    print(rekey.make_device_key(sys.argv[2]).hex())
    sys.exit(0)
try:
    rekey.run(bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3], sys.stdin.readline, print)
except RekeyError as exc:
    print("refused " + exc.reason)
    sys.exit(1)
print("committed")
