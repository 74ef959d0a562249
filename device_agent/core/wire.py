# The DIAMS wire format, version 1: one header byte (version << 4 | type), then fixed fields,
# all integers big-endian. docs/PROTOCOL.md is the byte-by-byte specification; this file is its
# only implementation. LAYOUT is the one table of the fixed-size messages; encode/decode serve them
# all (one function pair keeps the board's code small). Every decoder checks exact lengths and raises
# RemoteProtocolError("bad_message") and nothing else on any input.
import struct

from .errors import REASONS, RemoteProtocolError

VERSION = 1

HELLO = 1      # device -> gateway: epoch, counter, device nonce, HOTP value over (counter, nonce)
CHALLENGE = 2  # gateway -> device: gateway nonce, gateway tag
PROOF = 3      # device -> gateway: device tag
RESULT = 4     # gateway -> device: status, session lifetime, tag under the session key
DATA = 5       # device -> gateway, after authentication: seq, payload, tag
COMMAND = 6    # gateway -> device, after authentication: seq, payload, tag
REJECT = 7     # either way, unauthenticated hint: reason, epoch

NONCE_LEN = 8
TAG_LEN = 8
MAX_PAYLOAD = 16384

HELLO_LEN = 21
CHALLENGE_LEN = 17
PROOF_LEN = 9
RESULT_LEN = 14
REJECT_LEN = 6
SEALED_OVERHEAD = 13  # header + seq + tag

# type -> (struct format including the header byte, exact length)
LAYOUT = {
    HELLO: (">BII8s4s", HELLO_LEN),     # epoch u32, counter u32, Nd, otp
    CHALLENGE: (">B8s8s", CHALLENGE_LEN),  # Ng, tag_G
    PROOF: (">B8s", PROOF_LEN),          # tag_D
    RESULT: (">BBI8s", RESULT_LEN),      # status, lifetime u32 (s), tag_R
    REJECT: (">BBI", REJECT_LEN),        # reason, epoch hint u32
}


def header(mtype):
    return (VERSION << 4) | mtype


def message_type(payload):
    """The type of a well-versioned message, or raise RemoteProtocolError."""
    if not isinstance(payload, (bytes, bytearray, memoryview)) or not payload:
        raise RemoteProtocolError("bad_message")
    h = payload[0]
    t = h & 0x0F
    if h >> 4 != VERSION or t < HELLO or t > REJECT:
        raise RemoteProtocolError("bad_message")
    return t


def encode(mtype, *fields):
    """A fixed-size message of type ``mtype`` from its fields, in LAYOUT order."""
    return struct.pack(LAYOUT[mtype][0], header(mtype), *fields)


def decode(payload, mtype):
    """-> the fields of a fixed-size message of type ``mtype`` (a tuple, in LAYOUT order)."""
    fmt, n = LAYOUT[mtype]
    if message_type(payload) != mtype or len(payload) != n:
        raise RemoteProtocolError("bad_message")
    return struct.unpack(fmt, payload)[1:]


def result_body(status, lifetime):
    """The RESULT bytes its tag covers (everything before the tag)."""
    return struct.pack(">BBI", header(RESULT), status, lifetime)


def sealed_body(mtype, seq, payload):
    """DATA or COMMAND without its tag: header, seq, payload."""
    return struct.pack(">BI", header(mtype), seq) + payload


def decode_sealed(message, mtype):
    """DATA or COMMAND -> (seq, payload, tag)."""
    n = len(message) if isinstance(message, (bytes, bytearray, memoryview)) else -1
    if n < SEALED_OVERHEAD or n > MAX_PAYLOAD + SEALED_OVERHEAD or message_type(message) != mtype:
        raise RemoteProtocolError("bad_message")
    seq = struct.unpack_from(">I", message, 1)[0]
    return seq, bytes(message[5:n - TAG_LEN]), bytes(message[n - TAG_LEN:])


NO_SESSION = REASONS.index("no_session")


def no_session_signal(payload):
    """Whether ``payload`` is the gateway's "no session for you" REJECT (never for a role to handle).
    Asked of every handshake message the device receives, so it reads the bytes in place rather than
    letting decode() raise for the others (an exception is heap on a board, at every handshake step)."""
    try:
        return len(payload) == REJECT_LEN and payload[0] == header(REJECT) and payload[1] == NO_SESSION
    except TypeError:  # not bytes-like
        return False
