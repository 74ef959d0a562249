"""The private Mosquitto runner for tests; it lives in ``firmware_sim.broker`` (the demo and the
simulator use it too) and is re-exported here so test packages keep importing it from one place::

    from tests.mosquitto import MosquittoBroker, mosquitto_binary
"""

from __future__ import annotations

from firmware_sim.broker import MosquittoBroker, MosquittoError, free_port, mosquitto_binary, running_broker

__all__ = ["MosquittoBroker", "MosquittoError", "free_port", "mosquitto_binary", "running_broker"]
