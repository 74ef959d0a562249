# Key derivation and commitments: who can compute what from the device's embedded secret.
#
# Strategy: the embedded secret S (32 bytes, made at manufacture by a CSPRNG) never leaves the
# device and its owner's key store. Everything else is derived one way from it, with a label per
# use, so that holding one derived key gives nothing about S or about any sibling key:
#
#   device_id   = HMAC(S, "diams/v1/device-id" | characteristics)[:8]     (identity.py)
#   K_dg        = HKDF(S, salt=device_id, info="diams/v1/gateway-key" | gateway_id | epoch | fw_hash)
#   K_otp/K_mac = HKDF-Expand(K_dg, "diams/v1/otp" / "diams/v1/mac")
#   K_up/K_down = HKDF-Expand(K_mac, "diams/v1/up" / "diams/v1/down" | transcript)
#   P_e         = HMAC(S, "diams/v1/broker-password-epoch" | device_id | epoch)[:16]
#
# A gateway holds only its own K_dg (sealed to its X25519 key on the ledger), so a compromised
# gateway exposes no other gateway's key, and bumping the identity epoch or the firmware hash
# makes every earlier K_dg useless. docs/PROTOCOL.md section 3 specifies each input byte.
from .crypto import hkdf, hkdf_expand, hmac_sha256

DEVICE_ID_LEN = 8
SECRET_LEN = 32
_PREFIX = b"diams/v1"


def lp(value):
    """One length byte, then the bytes: the framing of every variable-length input."""
    if isinstance(value, str):
        value = value.encode()
    if len(value) > 255:
        raise ValueError("field longer than 255 bytes")
    return bytes((len(value),)) + value


def gateway_key(secret, device_id, gateway_id, epoch, firmware_hash):
    """K_dg: the verification key of one (device, gateway) pair for one epoch and firmware."""
    if len(secret) != SECRET_LEN or len(device_id) != DEVICE_ID_LEN or len(firmware_hash) != 32:
        raise ValueError("bad key derivation input length")
    info = b"diams/v1/gateway-key" + lp(gateway_id) + epoch.to_bytes(4, "big") + firmware_hash
    return hkdf(secret, device_id, info, 32)


def pair_keys(k_dg):
    """-> (K_otp, K_mac)"""
    return hkdf_expand(k_dg, b"diams/v1/otp"), hkdf_expand(k_dg, b"diams/v1/mac")


def transcript(device_id, gateway_id, epoch, counter, device_nonce, gateway_nonce):
    return (_PREFIX + device_id + lp(gateway_id) + epoch.to_bytes(4, "big") + counter.to_bytes(4, "big")
            + device_nonce + gateway_nonce)


def proof_tag(k_mac, label, t):
    """CHALLENGE and PROOF tags: label is the message type, so a tag never verifies as the other."""
    return hmac_sha256(k_mac, bytes((label,)) + t)[:8]


def session_keys(k_mac, t):
    """-> (K_up, K_down): device-to-gateway and gateway-to-device MAC keys for one session."""
    return hkdf_expand(k_mac, b"diams/v1/up" + t), hkdf_expand(k_mac, b"diams/v1/down" + t)


def broker_password(secret, device_id, epoch):
    """P_e, the device's MQTT password at identity epoch ``epoch`` (username = device id hex): 32 hex
    chars, one-way from S. A gateway is sealed P_e only for the epochs it is granted, so an epoch bump
    (a deauthorization among them) leaves a dropped gateway with a password the broker no longer takes."""
    label = b"diams/v1/broker-password-epoch"
    return hmac_sha256(secret, label + device_id + epoch.to_bytes(4, "big"))[:16].hex()
