"""Small paho-mqtt probes for broker tests: blocking helpers, TCP_NODELAY on, events recorded."""

from __future__ import annotations

import queue
import socket
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_sim.broker import MosquittoBroker


@dataclass
class Received:
    topic: str
    payload: bytes


class Probe:
    """One paho client (loop thread) that records what happens to it."""

    def __init__(self, broker: MosquittoBroker, username: str, password: str, *, v5: bool = True,
                 client_id: str = "") -> None:
        self.broker = broker
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.username_pw_set(username, password)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.pubacks: dict[int, ReasonCode] = {}
        self.puback_event = threading.Condition()
        self.disconnected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack.put(rc)

    def _on_disconnect(self, *args: object) -> None:
        self.disconnected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, msg.payload))

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties) -> None:
        with self.puback_event:
            self.pubacks[mid] = rc
            self.puback_event.notify_all()

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        """Connect and return the CONNACK reason code (success or a refusal)."""
        self.disconnected.clear()
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        return self.connack.get(timeout=timeout)

    def subscribe(self, *topics: str, timeout: float = 5.0) -> None:
        self.subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self.subscribed.wait(timeout), "no SUBACK"

    def publish(
        self, topic: str, payload: bytes = b"x", qos: int = 1, timeout: float = 5.0
    ) -> ReasonCode | None:
        """Publish; for QoS 1 wait for the PUBACK and return its reason code."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0:
            return None
        with self.puback_event:
            ok = self.puback_event.wait_for(lambda: info.mid in self.pubacks, timeout)
        return self.pubacks[info.mid] if ok else None

    def drain(self, wait: float = 0.3) -> list[Received]:
        """Everything received within ``wait`` seconds from now (and before)."""
        got = []
        try:
            got.append(self.messages.get(timeout=wait))
            while True:
                got.append(self.messages.get(timeout=0.05))
        except queue.Empty:
            return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho leaves its socket pair to __del__ (device_agent/agent/mqtt.py)
