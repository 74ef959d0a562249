# The device agent's policy, sans-IO: one copy for the paho agent, the MicroPython agent and the
# simulator's device. It decides which gateway to try, when, under which epoch and counter; when to
# re-authenticate; when to dial the broker again; and what the counter file holds.
#
# Strategy: events in, actions out (as the roles: the clock is the `now` argument of every event and
# randomness a function given at construction). The adapter feeds what it saw (connected, a handshake
# ended, a REJECT, "the gateway has no session for me", the broker refused the login, time passed) and
# carries out the returned actions in order:
#   (SAVE, text)                      write the counter file durably BEFORE the next action
#   (HELLO, gateway, epoch, counter)  start a handshake: a fresh DeviceRole, send its HELLO
#   (END_SESSION, reason)             forget the session ("expired", "no_session")
#   (CONNECT, epoch)                  dial the broker, logging in with P_epoch (PROTOCOL.md 3.4)
# wake_at() says when tick() next has work; `attempt` is the handshake in flight (or None).
#
# * Counters (PROTOCOL.md section 4): a counter is durable before the HELLO that uses it leaves, or a
#   crash could reuse it. A block of `block` counters is reserved in one write and handed out from
#   memory; after a restart the agent continues past the reserved block (the unused rest is a gap).
# * Epochs (section 5): a stale_epoch REJECT hinting a higher epoch than the one tried is retried at
#   once under the hint, committed only when that handshake succeeds. Any other failure forgets the
#   trial epoch, so a forged hint (REJECT is unauthenticated) costs one attempt and nothing more: in
#   particular no flash write and no line in the counter file. That needs care, because a counter must
#   never be sent twice under one (gateway, epoch), reboots included, and nothing about the trial
#   epoch is written. So a trial HELLO takes its counter from the *committed* epoch's durable
#   sequence for that gateway (the same reservation, the same next value): every counter that
#   sequence hands out is unique across reboots, whichever epoch it is sent under, and a gateway
#   accepts any c above its floor (gaps included). When an epoch is adopted (a handshake under it
#   succeeded, or the agent starts with a higher configured epoch) every gateway's counters *continue*
#   under it from where the older epochs' sequences were, instead of restarting at 0: a trial may
#   have spent some of them under that very epoch, unsaved. The hint's only costs are that counter
#   (the reservation write it may need is the one any HELLO needs every `block` counters) and the
#   attempt; tests/core/test_policy.py checks both and the no-reuse property across restarts.
# * Failover: no answer within `answer_timeout`, or a REJECT, moves on to the next gateway at once; a
#   whole failed round waits a full-jitter backoff U(0, min(cap, base * 2^n)). A success resets both
#   and the agent stays with the gateway that answered.
# * Re-authentication: `reauth_margin` before the session ends (at most half its lifetime), on a
#   verified reauth COMMAND, or when a gateway says it holds no session for this device. That last
#   signal is unauthenticated: it can at most start one handshake (never while one is in flight or
#   planned, nor within `min_reauth` seconds of the last success), and the old session keeps carrying
#   data until the new handshake completes.
# * Broker connection: a lost link waits a full-jitter backoff (reconnect_base), growing until a
#   connection is accepted, so a fleet does not reconnect in waves. A refused login (revoked,
#   suspended, not enrolled: it does not clear in seconds) waits the long one once the epoch probe
#   below is over: U(0, min(15 * backoff_cap, backoff_cap * 2^n)), n = failed dials in a row.
# * Login epoch (PROTOCOL.md 3.4): the broker password P_e depends on the epoch, so a device that was
#   offline over an epoch bump is refused at the broker before any gateway can hint the new epoch. A
#   refused login under epoch L < committed + `epoch_probe` dials again at once under L + 1; past that
#   the round is over: back to the committed epoch, after the long backoff. An accepted login
#   under L above the committed epoch is only a trial, like a hint: HELLOs go under L (the broker took
#   P_L, so some gateway holds a grant at L), and L is committed (one SAVE) only when a handshake under
#   it succeeds. A lying broker (without TLS, anyone on the path) can make the device try up to
#   `epoch_probe` epochs; it costs no write. Reconnects keep the last accepted login epoch.
#
# The counter file, one format for every agent (text, small enough to write on a board):
#   line 1: the committed epoch; then one line per gateway and epoch: "<gateway> <epoch> <highest reserved>"

SAVE = "save"
HELLO = "hello"
END_SESSION = "end_session"
CONNECT = "connect"

# Under MicroPython every function, class, attribute and distinct name costs heap when the module is
# imported (~100 bytes a function before its bytecode, a qstr per new name): this module is written
# with few of each (bench: mpy_agent_import_heap_bytes).


def parse_counters(text):
    """The counter file -> (epoch, {(gateway, epoch): highest reserved}); ValueError if it is damaged."""
    lines = text.split("\n")
    epoch = int(lines[0])
    reserved = {}
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        if len(words) != 3:
            raise ValueError("counter file: bad line %r" % line)
        reserved[(words[0], int(words[1]))] = int(words[2])
    if epoch < 0 or min(reserved.values(), default=0) < 0:
        raise ValueError("counter file: negative value")
    return epoch, reserved


def format_counters(epoch, reserved):
    out = "%d\n" % epoch
    for key in sorted(reserved):
        out += "%s %d %d\n" % (key[0], key[1], reserved[key])
    return out


def backoff_delay(base, cap, n, random):
    """Full jitter: U(0, min(cap, base * 2^n)), drawn from ``random(4)`` (bytes)."""
    return min(cap, base * (1 << min(n, 30))) * (int.from_bytes(random(4), "big") / 4294967296.0)


def _earliest(x, y):  # (no tuple to min() over: wake_at runs in the agent's loop, allocation-free)
    return y if x is None or (y is not None and y < x) else x


class AgentPolicy:
    def __init__(self, gateways, random, state=None, epoch=0, answer_timeout=5.0, reauth_margin=60.0,
                 backoff_base=0.5, backoff_cap=60.0, reconnect_base=5.0, block=16, min_reauth=10.0,
                 epoch_probe=4):
        if not gateways or block < 1 or epoch_probe < 0 or not 0 < backoff_base <= backoff_cap \
                or reconnect_base <= 0:
            raise ValueError("policy needs gateways, block >= 1, epoch_probe >= 0, 0 < base <= cap")
        self.gateways = tuple(gateways)
        self._random = random
        self.answer_timeout = answer_timeout
        self.reauth_margin = reauth_margin
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.reconnect_base = reconnect_base
        self.block = block
        self.min_reauth = min_reauth
        self.epoch_probe = epoch_probe
        self.epoch = epoch
        self.login_epoch = epoch  # the epoch of the next (or the accepted) broker login
        self.reserved = {}
        self.next = {}
        if state:
            saved, self.reserved = parse_counters(state)
            self.epoch = max(epoch, saved)
        self._adopt(self.epoch)
        self.stats = {}
        self.online = False
        self.attempt = None       # (gateway, epoch, counter, deadline) of the handshake in flight
        self.session_gateway = None
        self.expires = None       # the session's end, None without a session
        self._trial = None        # an epoch hinted by a REJECT, tried but not committed
        self._index = 0           # the gateway the next HELLO goes to
        self._failed_in_round = 0
        self._backoff_n = 0
        self._reconnect_n = 0     # failed dials in a row (lost links and refused logins)
        self._start_at = None     # when to start the next handshake; None: none planned
        self._reauth_at = None
        self._connect_at = None   # when to dial the broker; None: not planned
        self._authenticated_at = None

    # -- queries --------------------------------------------------------------------------------

    def has_session(self, now):
        return self.expires is not None and now < self.expires

    def wake_at(self):
        """When tick() next has work (handshakes only while online, dialling only while offline)."""
        if not self.online:
            return _earliest(self._connect_at, self.expires)
        a = self.attempt
        return _earliest(_earliest(self._start_at, self._reauth_at),
                         _earliest(self.expires, None if a is None else a[3]))

    def state(self):
        """The counter file's text (what the last SAVE wrote)."""
        return format_counters(self.epoch, self.reserved)

    # -- events ---------------------------------------------------------------------------------

    def start(self, now):
        """The agent starts: dial the broker at once."""
        self._connect_at = now
        return self.tick(now)

    def connected(self, now):
        self.online = True
        self._connect_at = None
        self._reconnect_n = 0
        if self.expires is None and self._start_at is None:
            self._start_at = now
        return self.tick(now)

    def disconnected(self, now):
        """The broker link dropped: an attempt in flight is abandoned (its reply cannot arrive)."""
        return self._offline(now, "disconnects")

    def login_refused(self, now):
        """The broker refused the CONNECT (bad credentials or not authorized): dial at once under the
        next epoch while the probe lasts (see the header), then from the committed epoch after the long
        backoff: U(0, min(15 * backoff_cap, backoff_cap * 2^n)), n = failed dials in a row."""
        if self.login_epoch < self.epoch + self.epoch_probe:
            self.login_epoch += 1
            self._count("login_epoch_probes")
            self._connect_at = now
        else:
            self.login_epoch = self.epoch
            cap = self.backoff_cap
            self._connect_at = now + backoff_delay(cap, 15 * cap, self._reconnect_n, self._random)
            self._reconnect_n += 1
        return self._offline(now, "login_refused")

    def authenticated(self, gateway, expires, now):
        """The handshake in flight completed: a session with ``gateway`` until ``expires``."""
        a = self.attempt
        if a is None or a[0] != gateway:
            self._count("stray_results")
            return self.tick(now)
        self.attempt = None
        self._trial = None
        self.session_gateway = gateway
        self.expires = expires
        self._authenticated_at = now
        self._failed_in_round = 0
        self._backoff_n = 0
        self._reauth_at = expires - min(self.reauth_margin, (expires - now) / 2)
        self._count("authenticated")
        out = []
        if a[1] > self.epoch:
            self._adopt(a[1])
            out.append((SAVE, self.state()))
        return out + self.tick(now)

    def rejected(self, gateway, reason, hint, now):
        """The handshake in flight ended without a session (REJECT, or a bad/denied RESULT)."""
        a = self.attempt
        if a is None or a[0] != gateway:
            self._count("stray_results")
            return self.tick(now)
        if reason == "stale_epoch" and hint is not None and hint > a[1]:
            self.attempt = None
            self._trial = hint
            self._start_at = now
            self._count("epoch_hints")
            return self.tick(now)
        return self._failed(reason, now)

    def reauth(self, now):
        """A verified reauth COMMAND: re-authenticate now (the old session keeps working meanwhile)."""
        self._reauth_at = now
        return self.tick(now)

    def no_session(self, gateway, now):
        """A gateway says it holds no session for this device (e.g. it restarted): unauthenticated, so
        it can at most start one handshake."""
        # a clock stepped back (an RTC corrected) makes the elapsed time negative: not "recent", or the
        # device would ignore a restarted gateway until its clock caught up (found by the campaign)
        t = self._authenticated_at
        g = self.session_gateway
        if (g is not None and gateway != g) or self.attempt is not None or self._start_at is not None \
                or (t is not None and 0 <= now - t < self.min_reauth):
            self._count("no_session_ignored")
            return self.tick(now)
        self._count("no_session")
        out = []
        if self.expires is not None:
            out.append((END_SESSION, "no_session"))
        self.expires = None
        self.session_gateway = None
        self._reauth_at = None
        self._start_at = now
        return out + self.tick(now)

    def tick(self, now):
        out = []
        a = self.attempt
        if a is not None and now >= a[3]:
            self._failed("timeout", now, False)
        if self.expires is not None and now >= self.expires:
            self.expires = None
            self.session_gateway = None
            self._reauth_at = None
            out.append((END_SESSION, "expired"))
            if self._start_at is None and self.attempt is None:
                self._start_at = now
        if self._reauth_at is not None and now >= self._reauth_at:
            self._reauth_at = None
            if self.attempt is None and self._start_at is None:
                self._start_at = now
        if not self.online:
            if self._connect_at is not None and now >= self._connect_at:
                self._connect_at = None
                out.append((CONNECT, self.login_epoch))
        elif self.attempt is None and self._start_at is not None and now >= self._start_at:
            self._start_at = None
            out += self._hello(now)
        return out

    # -- internals ------------------------------------------------------------------------------

    def _count(self, what):
        self.stats[what] = self.stats.get(what, 0) + 1

    def _offline(self, now, what):
        self._count(what)
        self.online = False
        if self.attempt is not None:
            self.attempt = None
            if self._start_at is None:
                self._start_at = now  # at once, when back online
        if self._connect_at is None:
            self._connect_at = now + backoff_delay(self.reconnect_base, self.backoff_cap, self._reconnect_n,
                                                   self._random)
            self._reconnect_n += 1
        return self.tick(now)

    def _adopt(self, epoch):
        """``epoch`` becomes the committed one; counters of older epochs carry over (see the header)."""
        self.epoch = epoch
        if self.login_epoch < epoch:
            self.login_epoch = epoch
        for table in (self.reserved, self.next):
            for key in list(table):
                if key[1] < epoch:
                    value = table.pop(key)
                    mine = (key[0], epoch)
                    table[mine] = max(table.get(mine, -1), value)

    def _hello(self, now):
        gateway = self.gateways[self._index]
        epoch = self.epoch if self._trial is None else self._trial
        if self.login_epoch > epoch:  # logged in with P of a later epoch: a trial, as a hint is
            epoch = self.login_epoch
        key = (gateway, self.epoch)  # a trial epoch draws on the committed epoch's durable counters
        top = self.reserved.get(key, -1)
        counter = self.next.get(key, top + 1)
        if counter > 0xFFFFFFFF:  # the counter is a u32
            raise OverflowError("OTP counters exhausted for this gateway and epoch: the owner must re-key")
        self.next[key] = counter + 1
        self.attempt = (gateway, epoch, counter, now + self.answer_timeout)
        self._count("hellos")
        hello = (HELLO, gateway, epoch, counter)
        if counter <= top:
            return [hello]
        self.reserved[key] = min(counter + self.block - 1, 0xFFFFFFFF)
        return [(SAVE, self.state()), hello]

    def _failed(self, reason, now, tick=True):
        """The attempt failed: the next gateway at once, or after a backoff once a whole round failed."""
        self.attempt = None
        self._trial = None
        self._count("failed_" + reason)
        self._index = (self._index + 1) % len(self.gateways)
        self._failed_in_round += 1
        self._start_at = now
        if self._failed_in_round >= len(self.gateways):
            self._failed_in_round = 0
            self._start_at += backoff_delay(self.backoff_base, self.backoff_cap, self._backoff_n,
                                            self._random)
            self._backoff_n += 1
        return self.tick(now) if tick else []
