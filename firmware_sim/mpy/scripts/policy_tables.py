# Runs under MicroPython: the agent policy and the topic module over the shared tables
# (tests/vectors/agent_policy.json, tests/vectors/topics.json). argv: the two JSON files.
# Prints one JSON line: {"policy": [[actions of each step] per table], "topics": [...]}.
import json
import sys

from device_agent.core import policy, topics

RANDOM = {"max": lambda n: b"\xff" * n, "zero": lambda n: b"\x00" * n}


def actions(got):
    return [list(a) for a in got]


with open(sys.argv[1]) as f:
    tables = json.load(f)
results = []
for table in tables:
    kw = table["settings"]
    p = policy.AgentPolicy(table["gateways"], RANDOM[table["random"]], state=table.get("state"), **kw)
    steps = []
    for event, args, _ in table["steps"]:
        try:
            steps.append(actions(getattr(p, event)(*args)))
        except Exception as exc:
            steps.append(["raised", type(exc).__name__])
    results.append(steps)

with open(sys.argv[2]) as f:
    cases = json.load(f)
parsed = []
for topic, _ in cases["parse"]:
    t = topics.parse(topic)
    parsed.append(None if t is None else list(t))
built = []
for fn, args, _ in cases["build"]:
    try:
        built.append(getattr(topics, fn)(*args))
    except ValueError:
        built.append(None)
print(json.dumps({"policy": results, "parse": parsed, "build": built}))
