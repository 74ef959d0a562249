"""The devices one gateway serves: protocol entries built from the identity index and its sealed keys.

A device is servable when the index says it is Active and holds a grant for this gateway at the
device's current epoch; its K_dg and broker password are unsealed with the gateway's X25519 key and
checked against the ledger's key commitment; its counter floor comes from the durable counter store.
``refresh`` turns the index's pushed changes into two lists: devices to cut off at the broker, and
enrolments (new devices, and devices whose epoch moved: their live connection is replaced).
A device quarantined after a clone alert stays quarantined across restarts (recorded with the
counters) until the ledger stops it being servable (the owner suspends or revokes it) or moves its epoch.

The re-key window (docs/PROTOCOL.md 2.3): after a transfer no gateway may be authorized until the new
owner re-keys the device, so no gateway serves it; but the owner may name this gateway to carry the
exchange (``startRekey``, with the device's broker password from S sealed to this gateway). While the
index says so (``DeviceView.rekeying_here``), the device gets a broker account for its re-key topics with
this gateway only (``EnrollRekey``), and no protocol entry: it cannot authenticate or send data here.
When the window ends (``confirmRekey`` moved the epoch, or anything else did) that account is cut off;
the owner's next grant brings the ordinary account, with the password from S'.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device_agent.core.gateway import DeviceEntry, GatewayRole
from ledger_bridge.index import DeviceView, IdentityIndex
from ledger_bridge.sealing import SealError, unseal, unseal_rekey_password

from .broker import BrokerSecret, Enroll, EnrollRekey
from .counters import CounterStore
from .settings import ProtocolSettings

log = logging.getLogger("diams.gateway.devices")


class BufferedRandom:
    """os.urandom read in 4 KiB blocks: the same CSPRNG, one syscall per 512 nonces."""

    def __init__(self, block: int = 4096) -> None:
        self._block = block
        self._buf = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf, self._pos = os.urandom(max(self._block, n)), 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def __repr__(self) -> str:
        return "BufferedRandom()"


@dataclass(frozen=True, kw_only=True)
class Served:
    """What the gateway holds for one device besides the protocol entry."""

    epoch: int
    commitment: bytes
    broker_secret: BrokerSecret
    publish: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class RekeyAccount:
    """A device in its re-key window here: the epoch it was named at, and its broker password."""

    epoch: int
    sealed: bytes
    broker_secret: BrokerSecret


class DeviceTable:
    def __init__(
        self,
        *,
        gateway_id: bytes,
        index: IdentityIndex,
        counters: CounterStore,
        private_key: X25519PrivateKey,
        protocol: ProtocolSettings,
    ) -> None:
        self.gateway_id = gateway_id
        self.index = index
        self.counters = counters
        self._key = private_key
        self._lifetime = protocol.session_lifetime
        self.entries: dict[bytes, DeviceEntry] = {}
        self.served: dict[bytes, Served] = {}
        self.unseal_errors = 0
        self.without_policy: set[bytes] = set()  # served, but every DATA message would be dropped
        self.rekeying: dict[bytes, RekeyAccount] = {}  # re-key window: a broker account, no entry
        self._quarantined: set[tuple[bytes, int]] = set()  # read from the counter store by load_all
        self.role = GatewayRole(
            gateway_id,
            self.entries.get,
            BufferedRandom(),
            window=protocol.window,
            proof_timeout=protocol.proof_timeout,
            max_pending=protocol.max_pending,
        )

    def __repr__(self) -> str:
        return f"DeviceTable({self.gateway_id.decode()}, {len(self.entries)} devices)"

    def __len__(self) -> int:
        return len(self.entries)

    def load_all(self) -> None:
        """Load every device the index says this gateway serves (or carries a re-key for), with the
        quarantines recorded in the counter store. Called once the stores are open."""
        self._quarantined = self.counters.quarantined()
        for did in self.index.servable_ids():
            view = self.index.device(did)
            if view is not None:
                self._load(view)
        for did in self.index.rekey_ids():
            view = self.index.device(did)
            if view is not None and view.rekeying_here:
                self._load_rekey(view)

    def _load_rekey(self, view: DeviceView) -> bool:
        rekey = view.rekey
        assert rekey is not None
        did = view.device_id
        try:
            password = unseal_rekey_password(
                rekey.sealed_password, self._key, did, self.gateway_id, rekey.epoch
            )
        except SealError as exc:
            self.unseal_errors += 1
            log.error("device %s: %s; its re-key is not carried here", did.hex(), exc)
            self.rekeying.pop(did, None)
            return False
        self.rekeying[did] = RekeyAccount(
            epoch=rekey.epoch, sealed=rekey.sealed_password, broker_secret=BrokerSecret(password.hex())
        )
        return True

    def _enroll_rekey(self, did: bytes) -> EnrollRekey:
        return EnrollRekey(
            device_id=did.hex(), gateway_id=self.gateway_id.decode(), secret=self.rekeying[did].broker_secret
        )

    def _refresh_rekey(self, did: bytes, view: DeviceView | None) -> tuple[bool, bool]:
        """The re-key window of one changed device -> (cut its re-key account, enrol it anew)."""
        was = self.rekeying.get(did)
        if view is not None and view.rekeying_here:
            assert view.rekey is not None
            if was is not None and was.epoch == view.rekey.epoch and was.sealed == view.rekey.sealed_password:
                return False, False
            if self._load_rekey(view):
                now = self.rekeying[did].broker_secret.reveal()
                # named again with the same password (a new box): the live login stays as it is
                same = was is not None and hmac.compare_digest(was.broker_secret.reveal(), now)
                return False, not same
            return was is not None, False
        if was is not None:
            del self.rekeying[did]
            return True, False
        return False, False

    def _load(self, view: DeviceView) -> bool:
        grant = view.grant
        assert grant is not None
        did = view.device_id
        try:
            keys = unseal(grant.sealed_key, self._key, did, self.gateway_id, view.epoch, grant.key_commitment)
        except SealError as exc:
            self.unseal_errors += 1
            log.error("device %s: %s; not served", did.hex(), exc)
            self._forget(did)
            return False
        floor, nonce = self.counters.floor_and_nonce(did, view.epoch)
        if view.clone_alert and (did, view.epoch) not in self._quarantined:
            self._quarantine_locally(did, view.epoch)  # another gateway's clone alert, from the ledger
        active = (did, view.epoch) not in self._quarantined
        self.entries[did] = DeviceEntry(did, keys.k_dg, view.epoch, active, floor, self._lifetime, nonce)
        self.served[did] = Served(
            epoch=view.epoch,
            commitment=grant.key_commitment,
            broker_secret=BrokerSecret(keys.broker_password.hex()),
            publish=frozenset(view.publish),
        )
        self._check_policy(did, view)
        return True

    def _check_policy(self, did: bytes, view: DeviceView) -> None:
        """Warn once when a served device has no policy: its data would be dropped as not_in_policy."""
        if view.publish:
            self.without_policy.discard(did)
        elif did not in self.without_policy:
            self.without_policy.add(did)
            log.warning(
                "device %s has no access policy (or one allowing no stream): its data will be dropped; "
                "the owner sets one with `diams-ledger set-policy %s <policy>`",
                did.hex(),
                did.hex(),
            )

    def _forget(self, did: bytes) -> None:
        self.without_policy.discard(did)
        self.entries.pop(did, None)
        self.served.pop(did, None)

    def enrollments(self) -> list[Enroll | EnrollRekey]:
        served: list[Enroll | EnrollRekey] = [
            Enroll(device_id=d.hex(), secret=s.broker_secret)
            for d, s in self.served.items()
            if self.entries[d].active
        ]
        return served + [self._enroll_rekey(d) for d in self.rekeying]

    def enrollment(self, did: bytes) -> Enroll | EnrollRekey | None:
        """The broker account ``did`` is entitled to now: its ordinary one (served and not quarantined),
        its re-key account (its re-key window is open here, on the chain as the index last saw it), or
        none. A ban's end asks this: what the chain did during the ban decides what comes back."""
        served, entry = self.served.get(did), self.entries.get(did)
        if served is not None and entry is not None and entry.active:
            return Enroll(device_id=did.hex(), secret=served.broker_secret)
        if did in self.rekeying:
            return self._enroll_rekey(did)
        return None

    def quarantine(self, did: bytes) -> None:
        """Stop serving a device locally (clone detected) until the ledger says otherwise."""
        entry = self.entries.get(did)
        if entry is not None:
            entry.active = False
            self._quarantine_locally(did, entry.epoch)

    def _quarantine_locally(self, did: bytes, epoch: int) -> None:
        self._quarantined.add((did, epoch))
        self.counters.set_quarantine(did, epoch)

    def _lift_quarantine(self, did: bytes) -> None:
        if any(d == did for d, _ in self._quarantined):
            self._quarantined = {(d, e) for d, e in self._quarantined if d != did}
            self.counters.lift_quarantine(did)

    def refresh(
        self, changed: Iterable[bytes], since_block: int | None = None
    ) -> tuple[list[bytes], list[Enroll | EnrollRekey]]:
        """Apply the index's changes (of blocks ``since_block`` on) -> (devices to cut off, enrolments).
        The broker applies the cut-offs first, then the enrolments.

        A clone quarantine is lifted when the owner acted on the ledger: the device left the servable
        states, or (suspend and activate in one batch) an owner action is among these blocks."""
        cut: list[bytes] = []
        enroll: list[Enroll | EnrollRekey] = []
        for did in changed:
            old = self.served.get(did)
            view = self.index.device(did)
            rekey_cut, rekey_enroll = self._refresh_rekey(did, view)
            if rekey_cut:
                cut.append(did)
            if rekey_enroll:
                enroll.append(self._enroll_rekey(did))
            if (
                view is not None
                and view.servable
                and not view.clone_alert
                and since_block is not None
                and any(d == did for d, _ in self._quarantined)
                and self.index.owner_acted(did, since_block)
            ):
                self._lift_quarantine(did)
                old = None  # served again from scratch: active, and enrolled at the broker
            if view is None or not view.servable:
                if old is not None:
                    self._forget(did)
                    if did not in cut:
                        cut.append(did)
                self._lift_quarantine(did)  # the owner acted on the ledger
                continue
            assert view.grant is not None
            if old is not None and old.epoch == view.epoch and old.commitment == view.grant.key_commitment:
                entry = self.entries[did]
                if view.clone_alert and entry.active:  # quarantined through the ledger: cut it off here too
                    self.quarantine(did)
                    cut.append(did)
                self.served[did] = Served(
                    epoch=old.epoch,
                    commitment=old.commitment,
                    broker_secret=old.broker_secret,
                    publish=frozenset(view.publish),
                )
                self._check_policy(did, view)
                continue
            if self._load(view):
                if old is not None and did not in cut:
                    cut.append(did)  # new epoch or key: end the session, the device re-authenticates
                if self.entries[did].active:
                    enroll.append(Enroll(device_id=did.hex(), secret=self.served[did].broker_secret))
            elif old is not None:
                cut.append(did)
        return cut, enroll
