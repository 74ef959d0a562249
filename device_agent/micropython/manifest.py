# ruff: noqa: F821
# mypy: ignore-errors
# Freeze the DIAMS device agent into a MicroPython firmware build (bytecode stays in flash, which
# is what keeps the agent's RAM to the heap of a handshake):
#   make -C ports/esp32 BOARD=... FROZEN_MANIFEST=/path/to/diams/device_agent/micropython/manifest.py
# The device side of the core only: gateway.py is not installed on boards.
metadata(description="DIAMS device agent: protocol core + umqtt.simple adapter", version="0.1.0")

require("umqtt.simple")

package(
    "device_agent",
    files=(
        "__init__.py",
        "core/__init__.py",
        "core/crypto.py",
        "core/otp.py",
        "core/wire.py",
        "core/keys.py",
        "core/states.py",
        "core/events.py",
        "core/session.py",
        "core/device.py",
        "core/errors.py",
        "core/topics.py",
        "core/policy.py",
        # re-keying at transfer (docs/PROTOCOL.md 2.3): imported only when a re-key starts, so it
        # costs flash here and no heap during handshakes
        "core/rekey.py",
        "core/x25519.py",
        "micropython/__init__.py",
        "micropython/agent.py",
        # MQTT over TLS: imported only when the agent is given tls_ca
        "micropython/tls.py",
        "micropython/rekey.py",
    ),
    base_path="../..",
    # -O3: no line-number tables and no asserts in the frozen bytecode (smaller in flash and, loaded
    # from .mpy, in RAM); tracebacks from these modules show no line numbers. The bench and the
    # tests compile with the same level (firmware_sim/mpy/runner.py compile_one).
    opt=3,
)
