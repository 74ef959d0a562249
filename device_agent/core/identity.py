# The device's identity as the ledger sees it: its id, the commitments registered on chain, and the
# claim hash. Computed at manufacture and by owners' tools; the device itself never needs these at
# run time, so boards do not install this module (docs/PROTOCOL.md section 2).
from .crypto import hmac_sha256, sha256
from .keys import DEVICE_ID_LEN, SECRET_LEN, lp

SALT_LEN = 16


def characteristics(model, serial, mac):
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError("MAC address must be 6 bytes")
    return lp(model) + lp(serial) + mac


def derive_device_id(secret, model, serial, mac):
    if len(secret) != SECRET_LEN:
        raise ValueError("device secret must be 32 bytes")
    return hmac_sha256(secret, b"diams/v1/device-id" + characteristics(model, serial, mac))[:DEVICE_ID_LEN]


def characteristics_commitment(salt, model, serial, mac, firmware_hash):
    """Salted commitment to the characteristics: what the ledger stores instead of serial and MAC."""
    if len(salt) != SALT_LEN or len(firmware_hash) != 32:
        raise ValueError("salt must be 16 bytes and firmware hash 32 bytes")
    return sha256(b"diams/v1/chars" + salt + characteristics(model, serial, mac) + firmware_hash)


def claim_hash(device_id, claim_code):
    """What the manufacturer registers; the owner later reveals claim_code to claim the device."""
    return sha256(b"diams/v1/claim" + device_id + claim_code)


def key_commitment(k_dg):
    """Published on the ledger beside the sealed key; lets a gateway check what it unsealed."""
    return hmac_sha256(k_dg, b"diams/v1/key-commitment")
