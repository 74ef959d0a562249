# The DIAMS wire format, version 1: one header byte (version << 4 | type), then fixed fields,
# all integers big-endian. docs/PROTOCOL.md is the byte-by-byte specification; this file is its
# only implementation. Every decoder checks exact lengths and raises RemoteProtocolError
# ("bad_message") and nothing else on any input.
import struct

from .errors import RemoteProtocolError

VERSION = 1

HELLO = 1      # device -> gateway: epoch, counter, device nonce, HOTP value (4 bytes)
CHALLENGE = 2  # gateway -> device: gateway nonce, gateway tag
PROOF = 3      # device -> gateway: device tag
RESULT = 4     # gateway -> device: status, session lifetime, tag under the session key
DATA = 5       # device -> gateway, after authentication: seq, payload, tag
COMMAND = 6    # gateway -> device, after authentication: seq, payload, tag
REJECT = 7     # either way, unauthenticated hint: reason, epoch

NONCE_LEN = 8
TAG_LEN = 8
MAX_PAYLOAD = 16384

_HELLO = ">BII8s4s"
_CHALLENGE = ">B8s8s"
_PROOF = ">B8s"
_RESULT = ">BBI8s"
_REJECT = ">BBI"
_SEQ = ">BI"

HELLO_LEN = 21
CHALLENGE_LEN = 17
PROOF_LEN = 9
RESULT_LEN = 14
REJECT_LEN = 6
SEALED_OVERHEAD = 13  # header + seq + tag


def header(mtype):
    return (VERSION << 4) | mtype


def _bad():
    return RemoteProtocolError("bad_message")


def message_type(payload):
    """The type of a well-versioned message, or raise RemoteProtocolError."""
    if not isinstance(payload, (bytes, bytearray, memoryview)) or not payload:
        raise _bad()
    h = payload[0]
    t = h & 0x0F
    if h >> 4 != VERSION or t < HELLO or t > REJECT:
        raise _bad()
    return t


def _fixed(payload, mtype, fmt, length):
    if message_type(payload) != mtype or len(payload) != length:
        raise _bad()
    return struct.unpack(fmt, payload)


def encode_hello(epoch, counter, nonce, otp):
    return struct.pack(_HELLO, header(HELLO), epoch, counter, nonce, otp)


def decode_hello(payload):
    """-> (epoch, counter, nonce, otp)"""
    return _fixed(payload, HELLO, _HELLO, HELLO_LEN)[1:]


def encode_challenge(nonce, tag):
    return struct.pack(_CHALLENGE, header(CHALLENGE), nonce, tag)


def decode_challenge(payload):
    """-> (gateway_nonce, tag)"""
    return _fixed(payload, CHALLENGE, _CHALLENGE, CHALLENGE_LEN)[1:]


def encode_proof(tag):
    return struct.pack(_PROOF, header(PROOF), tag)


def decode_proof(payload):
    """-> tag"""
    return _fixed(payload, PROOF, _PROOF, PROOF_LEN)[1]


def encode_result(status, lifetime, tag):
    return struct.pack(_RESULT, header(RESULT), status, lifetime, tag)


def result_body(status, lifetime):
    """The RESULT bytes its tag covers (everything before the tag)."""
    return struct.pack(">BBI", header(RESULT), status, lifetime)


def decode_result(payload):
    """-> (status, lifetime_s, tag)"""
    return _fixed(payload, RESULT, _RESULT, RESULT_LEN)[1:]


def encode_reject(reason, epoch=0):
    return struct.pack(_REJECT, header(REJECT), reason, epoch)


def decode_reject(payload):
    """-> (reason_code, epoch)"""
    return _fixed(payload, REJECT, _REJECT, REJECT_LEN)[1:]


def encode_sealed(mtype, seq, payload, tag):
    return struct.pack(_SEQ, header(mtype), seq) + payload + tag


def sealed_body(mtype, seq, payload):
    return struct.pack(_SEQ, header(mtype), seq) + payload


def decode_sealed(message, mtype):
    """DATA or COMMAND -> (seq, payload, tag)."""
    n = len(message) if isinstance(message, (bytes, bytearray, memoryview)) else -1
    if n < SEALED_OVERHEAD or n > MAX_PAYLOAD + SEALED_OVERHEAD or message_type(message) != mtype:
        raise _bad()
    seq = struct.unpack_from(">I", message, 1)[0]
    return seq, bytes(message[5:n - TAG_LEN]), bytes(message[n - TAG_LEN:])
