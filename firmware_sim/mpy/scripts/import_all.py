# Runs under MicroPython: imports each core module named in argv, prints {"files": {name: __file__}}.
import json
import sys

files = {}
for name in sys.argv[1:]:
    module = __import__("device_agent.core." + name, None, None, [name])
    files[name] = module.__file__
print(json.dumps({"files": files}))
