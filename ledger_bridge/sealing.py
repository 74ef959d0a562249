"""Sealing a gateway's device keys (K_dg and the broker password) to the gateway's X25519 public key.

Strategy: the ledger must carry K_dg to the gateway without anyone else learning it, so the owner
seals it: an ephemeral X25519 key agreement with the gateway's registered public key, HKDF-SHA256
over the shared secret bound to both public keys and to (device, gateway, epoch), and
ChaCha20-Poly1305 under that one-time key (so a fixed nonce is safe). The associated data binds
the box to (device, gateway, epoch): a box moved to another device, gateway or epoch fails to open.

    sealed = ephemeral_public (32) | ciphertext of K_dg (32) | broker password (16) | Poly1305 tag (16)
           = 96 bytes

The broker password (derived by the device from S, see ``keys.broker_password``) travels with K_dg
so that whichever gateway manages the site's broker can enroll the device there.

The ledger also stores ``key_commitment(K_dg)``; a gateway checks what it unsealed against it.
docs/PROTOCOL.md section 3.4 is the specification; tests/vectors/sealing.json pins it.

Why not RFC 9180 HPKE (``cryptography.hazmat.primitives.hpke``, cryptography 50.0.2, pinned): this
is HPKE base mode in all but its labels (DHKEM-style X25519 agreement, HKDF-SHA256 bound to both
public keys, ChaCha20-Poly1305 under a one-time key), and rests on the same assumptions. We keep it,
for now, because (1) the library offers only single-shot ``Suite.encrypt/decrypt``: a fresh ephemeral
key inside, ``info`` but no AAD, no access to the key schedule, so the RFC's own test vectors (fixed
ephemeral keys, AAD "Count-i") cannot be run against it, and our use of it could not be checked
against the RFC either; (2) the 96-byte box is on chain (PROTOCOL.md 3.4): changing it is a protocol
version, best done with the re-keying work that is changing sealing now (issue 10). What would
change: ``enc || ct`` from ``Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)`` with the
context as ``info``, the same 96 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device_agent.core.crypto import ct_equal
from device_agent.core.identity import key_commitment
from device_agent.core.keys import lp
from device_agent.private import KeystoreError, check_private, write_private

SEALED_LEN = 96
BROKER_PASSWORD_LEN = 16
_RAW = serialization.Encoding.Raw


class SealError(Exception):
    """A sealed key did not open or did not match its commitment. Carries no key material."""


def _context(device_id: bytes, gateway_id: bytes, epoch: int) -> bytes:
    return bytes(device_id + lp(gateway_id) + epoch.to_bytes(4, "big"))


def _box_key(shared: bytes, eph_pub: bytes, gw_pub: bytes, context: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, eph_pub + gw_pub, b"diams/v1/seal" + context).derive(shared)


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(_RAW, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class GatewayKeys:
    """What one gateway learns of one device from the ledger. Never shown in reprs."""

    k_dg: bytes = field(repr=False)
    broker_password: bytes = field(repr=False)


def seal(keys: GatewayKeys, gateway_public: bytes, device_id: bytes, gateway_id: bytes, epoch: int) -> bytes:
    """Seal the keys to the gateway's 32-byte X25519 public key; -> 96 bytes for the ledger."""
    if len(keys.k_dg) != 32 or len(gateway_public) != 32 or len(keys.broker_password) != BROKER_PASSWORD_LEN:
        raise ValueError("K_dg and the gateway public key must be 32 bytes, the broker password 16")
    return _seal_with(X25519PrivateKey.generate(), keys, gateway_public, device_id, gateway_id, epoch)


def _seal_with(eph: X25519PrivateKey, keys: GatewayKeys, gateway_public: bytes, device_id: bytes,
               gateway_id: bytes, epoch: int) -> bytes:
    """``seal`` with a given ephemeral key (tests/vectors/sealing.json pins the format with one)."""
    eph_pub = public_bytes(eph.public_key())
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(gateway_public))
    except ValueError as exc:  # a low-order point gives an all-zero secret
        raise SealError("gateway public key is not usable for X25519") from exc
    context = _context(device_id, gateway_id, epoch)
    box = ChaCha20Poly1305(_box_key(shared, eph_pub, gateway_public, context))
    return eph_pub + box.encrypt(bytes(12), keys.k_dg + keys.broker_password, context)


def unseal(sealed: bytes, gateway_private: X25519PrivateKey, device_id: bytes, gateway_id: bytes,
           epoch: int, commitment: bytes | None = None) -> GatewayKeys:
    """Open a sealed box with the gateway's private key; -> its keys, or raise SealError."""
    if len(sealed) != SEALED_LEN:
        raise SealError(f"sealed key must be {SEALED_LEN} bytes, got {len(sealed)}")
    eph_pub, ciphertext = sealed[:32], sealed[32:]
    gw_pub = public_bytes(gateway_private.public_key())
    context = _context(device_id, gateway_id, epoch)
    try:
        shared = gateway_private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        box = ChaCha20Poly1305(_box_key(shared, eph_pub, gw_pub, context))
        plain = box.decrypt(bytes(12), ciphertext, context)
    except (InvalidTag, ValueError):
        raise SealError(f"sealed key for device {device_id.hex()} does not open with this key") from None
    keys = GatewayKeys(k_dg=plain[:32], broker_password=plain[32:])
    if commitment is not None and not ct_equal(key_commitment(keys.k_dg), commitment):
        raise SealError(f"sealed key for device {device_id.hex()} does not match its ledger commitment")
    return keys


# ---- the re-key window's box: the device's broker password from S, for the gateway that carries it ----
REKEY_SEALED_LEN = 64  # ephemeral public (32) | ciphertext of the broker password (16) | tag (16)
_REKEY_LABEL = b"diams/v1/seal-rekey"


def seal_rekey_password(
    broker_password: bytes, gateway_public: bytes, device_id: bytes, gateway_id: bytes, epoch: int
) -> bytes:
    """Seal the device's broker password (16 bytes) for the gateway named to carry its re-key (startRekey).

    Another label than a grant's box, so neither opens as the other: a gateway never takes a re-key box
    for a grant (the box holds no K_dg and gives the device only its re-key topics)."""
    if len(broker_password) != BROKER_PASSWORD_LEN or len(gateway_public) != 32:
        raise ValueError("the broker password must be 16 bytes, the gateway public key 32")
    eph = X25519PrivateKey.generate()
    return _seal_rekey_with(eph, broker_password, gateway_public, device_id, gateway_id, epoch)


def _seal_rekey_with(eph: X25519PrivateKey, broker_password: bytes, gateway_public: bytes, device_id: bytes,
                     gateway_id: bytes, epoch: int) -> bytes:
    """``seal_rekey_password`` with a given ephemeral key (tests/vectors/sealing.json's ``rekey_cases``)."""
    eph_pub = public_bytes(eph.public_key())
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(gateway_public))
    except ValueError as exc:
        raise SealError("gateway public key is not usable for X25519") from exc
    context = _context(device_id, gateway_id, epoch)
    key = HKDF(hashes.SHA256(), 32, eph_pub + gateway_public, _REKEY_LABEL + context).derive(shared)
    return eph_pub + ChaCha20Poly1305(key).encrypt(bytes(12), broker_password, context)


def unseal_rekey_password(
    sealed: bytes, gateway_private: X25519PrivateKey, device_id: bytes, gateway_id: bytes, epoch: int
) -> bytes:
    """Open a re-key box with the gateway's private key; -> the 16-byte broker password, or SealError."""
    if len(sealed) != REKEY_SEALED_LEN:
        raise SealError(f"sealed re-key password must be {REKEY_SEALED_LEN} bytes, got {len(sealed)}")
    eph_pub, ciphertext = sealed[:32], sealed[32:]
    gw_pub = public_bytes(gateway_private.public_key())
    context = _context(device_id, gateway_id, epoch)
    try:
        shared = gateway_private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        key = HKDF(hashes.SHA256(), 32, eph_pub + gw_pub, _REKEY_LABEL + context).derive(shared)
        return ChaCha20Poly1305(key).decrypt(bytes(12), ciphertext, context)
    except (InvalidTag, ValueError):
        raise SealError(
            f"sealed re-key password for device {device_id.hex()} does not open with this key"
        ) from None


def generate_gateway_key(path: Path) -> bytes:
    """Create the gateway's X25519 private key in a new 0600 file; -> the public key to register."""
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    write_private(path, raw, exclusive=True)
    return public_bytes(key.public_key())


def load_gateway_key(path: Path) -> X25519PrivateKey:
    """Load the gateway's private key; refuse a file that group or others can read."""
    try:
        check_private(path, "gateway key")
    except KeystoreError as exc:
        raise SealError(str(exc)) from None
    raw = path.read_bytes()
    if len(raw) != 32:
        raise SealError(f"{path} does not hold a 32-byte X25519 private key")
    return X25519PrivateKey.from_private_bytes(raw)
