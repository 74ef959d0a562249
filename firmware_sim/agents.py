"""Devices provisioned by ``diams-agent provision`` and paho agents running in a thread, for the agent
tests and the agent benchmarks (``bench/bench_mpy_agent.py``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from device_agent.agent.config import AgentConfig, load_config
from device_agent.agent.keystore import load_secret
from device_agent.agent.mqtt import MqttAgent
from device_agent.agent.provision import Provisioned, provision

__all__ = ["Device", "running"]


class Device:
    """A device provisioned by ``diams-agent provision`` into a directory."""

    def __init__(self, out: Path, serial: str = "SN-1", gateways: tuple[str, ...] = ("gw-a",)) -> None:
        firmware = out / "firmware.bin"
        firmware.write_bytes(b"firmware image " + serial.encode())
        self.prov: Provisioned = provision(model="pi-sensor", serial=serial, mac="02:00:00:00:00:01",
                                           firmware=firmware, out=out, gateways=gateways)
        owner = json.loads(self.prov.owner_file.read_text())
        self.device_hex: str = owner["device_id"]
        self.device_id = bytes.fromhex(self.device_hex)
        self.secret = bytes.fromhex(owner["secret"])
        self.fw = bytes.fromhex(owner["firmware_hash"])

    def config(self, broker: Any, **changes: Any) -> AgentConfig:
        base = load_config(self.prov.config_file, environ={})
        defaults: dict[str, Any] = {"broker_host": broker.host, "broker_port": broker.port,
                                    "answer_timeout_s": 2.0, "backoff_base_s": 0.05, "backoff_cap_s": 0.5,
                                    "reconnect_base_s": 0.2,
                                    # provisioning writes a /proc/loadavg stream as an example; a test
                                    # publishes what it means to, and names its streams itself
                                    "streams": ()}
        return dataclasses.replace(base, **{**defaults, **changes})

    def agent(self, config: AgentConfig, **kwargs: Any) -> MqttAgent:
        return MqttAgent(config, load_secret(config.key_file), **kwargs)


@contextlib.contextmanager
def running(agent: MqttAgent) -> Iterator[MqttAgent]:
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stop()
        thread.join(10)
        assert not thread.is_alive(), "agent did not stop"
