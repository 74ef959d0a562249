# mypy: ignore-errors
# (MicroPython code: time.ticks_*, select.poll on a umqtt socket and untyped signatures; it is
# checked by mpy-cross and run under the real unix port in tests/micropython_agent/ instead.)
#
# The MicroPython device agent: umqtt.simple moves bytes between the broker and the protocol core.
#
# Strategy: the same core as every other component (DeviceRole, Session); this file only does I/O,
# the write-ahead counter file and the retry policy, in the plainest MicroPython (no typing, no
# dataclasses, no json on the hot path). Memory: topics are built once; the DeviceRole of an attempt
# is dropped as soon as it ends; K_dg lives only inside the role (as K_otp/K_mac). Waiting is
# select.poll on the MQTT socket, so the board sleeps instead of spinning. The subscription
# callback only queues (topic, message): umqtt can deliver a message while it waits for a PUBACK
# or SUBACK, so nothing protocol-related runs inside it.
#
# Retry policy (as diams-agent): a gateway that does not answer within answer_ms, or REJECTs, is
# skipped for the next one in order; a stale_epoch REJECT hinting a higher epoch is retried at once
# under that epoch, committed only after success; a whole failed round waits a full-jitter backoff.
import os
import time

try:
    import select
except ImportError:  # older ports
    import uselect as select

from umqtt.simple import MQTTClient

from device_agent.core import keys
from device_agent.core.device import DeviceRole
from device_agent.core.events import Authenticated, Rejected


def _now():
    return time.time()


class CounterFile:
    """Write-ahead OTP counters per (gateway, epoch) and the committed epoch, in one small text file.

    Line 1: the committed epoch; then one line per gateway: "<gateway> <epoch> <highest reserved>".
    A block of counters is reserved (one flash write) before the first of them is used; after a
    reboot the agent continues past the block. Replaced by write-to-temp + rename.
    """

    def __init__(self, path, block=16, epoch=0):
        self.path = path
        self.block = block
        self.epoch = epoch
        self.reserved = {}
        self.next = {}
        self.writes = 0
        try:
            with open(path) as f:
                lines = f.read().split("\n")
            self.epoch = max(epoch, int(lines[0]))
            for line in lines[1:]:
                w = line.split()
                if len(w) == 3:
                    self.reserved[(w[0], int(w[1]))] = int(w[2])
        except OSError:
            pass

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % self.epoch)
            for (gw, e), top in self.reserved.items():
                f.write("%s %d %d\n" % (gw, e, top))
        os.rename(tmp, self.path)
        self.writes += 1

    def take(self, gateway, epoch):
        """The next counter; durable (reserved on flash) before this returns."""
        key = (gateway, epoch)
        top = self.reserved.get(key, -1)
        n = self.next.get(key, top + 1)
        if n > top:
            self.reserved[key] = n + self.block - 1
            self._save()
        self.next[key] = n + 1
        return n

    def commit_epoch(self, epoch):
        if epoch > self.epoch:
            self.epoch = epoch
            for key in list(self.reserved):
                if key[1] < epoch:
                    del self.reserved[key]
            self._save()


class Agent:
    """One device: ``connect()``, ``authenticate()``, then ``publish()`` and ``poll()``; or ``run()``."""

    def __init__(self, device_id, secret, firmware_hash, gateways, server, port=1883, epoch=0,
                 state_path="diams.state", block=16, answer_ms=5000, keepalive=30, on_command=None,
                 reauth_margin=60, backoff_base_ms=500, backoff_cap_ms=60000):
        self.device_id = device_id
        self.dhex = device_id.hex()
        self._secret = secret
        self._fw = firmware_hash
        self.gateways = [g.encode() if isinstance(g, str) else g for g in gateways]
        self.counters = CounterFile(state_path, block, epoch)
        self.answer_ms = answer_ms
        self.on_command = on_command
        self.reauth_margin = reauth_margin
        self.backoff_base_ms = backoff_base_ms
        self.backoff_cap_ms = backoff_cap_ms
        self._up = ["diams/v1/hs/%s/%s/up" % (g.decode(), self.dhex) for g in self.gateways]
        self._down = ["diams/v1/hs/%s/%s/down" % (g.decode(), self.dhex) for g in self.gateways]
        self._cmd_prefix = None  # diams/v1/c/<G>/<D>/ and diams/v1/d/<G>/<D>/: set with the session's G
        self._data_prefix = None
        self.client = MQTTClient(self.dhex, server, port, user=self.dhex,
                                 password=keys.broker_password(secret, device_id), keepalive=keepalive)
        self.client.set_callback(self._queue)
        self._inbox = []
        self._poller = None
        self._index = 0
        self.session = None
        self.gateway = None
        self.reauth = False
        self.stats = {"hellos": 0, "authenticated": 0, "failed": 0, "commands_ok": 0, "commands_dropped": 0}
        self.last_refusal = None  # the last REJECT reason (printed when it happens)

    def __repr__(self):
        return "Agent(%s, gateway=%s)" % (self.dhex, self.gateway)

    # -- MQTT ---------------------------------------------------------------------------------------

    def _queue(self, topic, msg):
        self._inbox.append((topic, msg))

    def connect(self):
        self.client.connect()
        try:  # Nagle + delayed ACK would add ~40 ms to every handshake step
            self.client.sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (same numbers on lwIP)
        except (OSError, AttributeError, TypeError):
            pass
        for t in self._down:
            self.client.subscribe(t, 1)
        self.client.subscribe(b"diams/v1/c/+/%s/+" % self.dhex.encode(), 1)
        self._poller = select.poll()
        self._poller.register(self.client.sock, select.POLLIN)

    def _wait(self, ms):
        """Block up to ``ms`` for one MQTT packet; queued messages land in the inbox."""
        if self._poller.poll(ms):
            self.client.wait_msg()

    # -- handshake ------------------------------------------------------------------------------------

    def authenticate(self, rounds=1):
        """Handshake with the gateways in order (``rounds`` times through the list) -> True on success."""
        trial = None
        failures = 0
        while failures < rounds * len(self.gateways):
            i = self._index
            epoch = self.counters.epoch if trial is None else trial
            result = self._attempt(i, epoch)
            if result is True:
                self.counters.commit_epoch(epoch)
                return True
            if result is not None and result > epoch:  # stale_epoch with a higher hint: retry at once
                trial = result
                continue
            trial = None
            failures += 1
            self.stats["failed"] += 1
            self._index = (i + 1) % len(self.gateways)
        return False

    def _attempt(self, i, epoch):
        """One handshake -> True, an epoch hint (int), or None (failed)."""
        gw = self.gateways[i]
        role = DeviceRole(self.device_id, gw, keys.gateway_key(self._secret, self.device_id, gw, epoch,
                                                                self._fw), epoch)
        counter = self.counters.take(gw.decode(), epoch)
        self.client.publish(self._up[i], role.hello(counter, os.urandom(8)))
        self.stats["hellos"] += 1
        deadline = time.ticks_add(time.ticks_ms(), self.answer_ms)
        down = self._down[i].encode()
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                role.timeout()
                return None
            self._wait(left)
            while self._inbox:
                topic, msg = self._inbox.pop(0)
                if topic != down:
                    self._other(topic, msg)
                    continue
                reply, ev = role.receive(msg, _now())
                if reply is not None:
                    self.client.publish(self._up[i], reply)
                if isinstance(ev, Authenticated):
                    self.session = ev.session
                    self.gateway = gw
                    self._cmd_prefix = b"diams/v1/c/%s/%s/" % (gw, self.dhex.encode())
                    self._data_prefix = "diams/v1/d/%s/%s/" % (gw.decode(), self.dhex)
                    self.reauth = False
                    self.stats["authenticated"] += 1
                    return True
                if isinstance(ev, Rejected):
                    if ev.reason == "stale_epoch" and ev.epoch > epoch:
                        return ev.epoch
                    self.last_refusal = ev.reason
                    print("diams: refused by", gw.decode(), "at epoch", epoch, ":", ev.reason)
                    return None

    # -- after authentication -------------------------------------------------------------------------

    def publish(self, stream, payload):
        """Authenticated DATA on ``stream`` -> False when there is no live session."""
        s = self.session
        if s is None or _now() >= s.expires:
            return False
        self.client.publish(self._data_prefix + stream, s.seal(stream.encode(), payload))
        return True

    def _other(self, topic, msg):
        if self.session is None or not topic.startswith(self._cmd_prefix):
            return
        name = topic[len(self._cmd_prefix):]
        payload, _ = self.session.open(name, msg, _now())
        if payload is None:
            self.stats["commands_dropped"] += 1
            return
        self.stats["commands_ok"] += 1
        if name == b"reauth":
            self.reauth = True
        elif self.on_command:
            self.on_command(name.decode(), payload)

    def poll(self, ms=0):
        """Wait up to ``ms`` for messages and handle them (commands)."""
        self._wait(ms)
        while self._inbox:
            topic, msg = self._inbox.pop(0)
            self._other(topic, msg)

    def needs_auth(self):
        s = self.session
        return self.reauth or s is None or _now() >= s.expires - self.reauth_margin

    # -- the whole loop -------------------------------------------------------------------------------

    def _backoff(self, attempt):
        cap = min(self.backoff_cap_ms, self.backoff_base_ms << min(attempt, 16))
        time.sleep_ms(int.from_bytes(os.urandom(4), "big") % (cap + 1))  # full jitter

    def run(self, read, stream="telemetry", interval_s=30):
        """Forever: (re)connect, authenticate, publish ``read()`` every ``interval_s`` seconds."""
        attempt = 0
        while True:
            try:
                if self._poller is None:
                    self.connect()
                if self.needs_auth() and not self.authenticate():
                    self._backoff(attempt)
                    attempt += 1
                    continue
                attempt = 0
                self.publish(stream, read())
                until = time.ticks_add(time.ticks_ms(), int(interval_s * 1000))
                while time.ticks_diff(until, time.ticks_ms()) > 0 and not self.reauth:
                    self.poll(time.ticks_diff(until, time.ticks_ms()))
            except OSError:
                self._poller = None
                try:
                    self.client.sock.close()
                except OSError as exc:  # already gone
                    print("diams: close:", exc)
                self._backoff(attempt)
                attempt += 1
