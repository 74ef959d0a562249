# The MQTT topic layout of DIAMS version 1: the only place a topic is written or read.
#
#   diams/v1/hs/<G>/<D>/up        device D -> gateway G: HELLO, PROOF
#   diams/v1/hs/<G>/<D>/down      gateway G -> device D: CHALLENGE, RESULT, REJECT
#   diams/v1/d/<G>/<D>/<stream>   device D -> gateway G: DATA, after authentication with G
#   diams/v1/c/<G>/<D>/<name>     gateway G -> device D: COMMAND, after authentication
#   diams/v1/v/<G>/<D>/<stream>   gateway G -> applications: data G verified, republished
#   diams/v1/rk/<G>/<D>/down      the new owner's tool (with gateway G's broker account) -> device D:
#                                 re-key INIT, CONFIRM (docs/PROTOCOL.md 2.3)
#   diams/v1/rk/<G>/<D>/up        device D -> the new owner's tool: re-key REPLY
#
# Strategy: every topic has the same six levels (prefix, kind, gateway, device, last), so one
# builder and one parser serve all of them. Identifiers are checked against one rule each before
# they reach a topic, a broker password file or an ACL line, because an MQTT wildcard (+ #), a level
# separator (/), "$" or whitespace would widen a device's rights or inject a line:
#   device id   16 lowercase hex characters (the canonical form of the 8-byte id: what the broker's
#               %u patterns match; "AB..", spaces and short forms are refused)
#   gateway id  1-32 characters of [a-z0-9-]
#   stream and command names  1-64 characters of [A-Za-z0-9_-]   (the one stream-name rule)
# Subscription filters and ACL lines use the same builder with a wildcard in place of an
# identifier: ANY ("+") anywhere, and the broker's username substitution USER ("%u") as a device.
# Builders raise ValueError on a bad identifier (the caller's mistake); parse() returns None for any
# topic that is not exactly one of the six forms (a peer's mistake, counted by the caller).
# MicroPython-safe: stdlib only, no re (checks are str.strip with a character set).

PREFIX = "diams/v1"
HANDSHAKE = "hs"
DATA = "d"
COMMAND = "c"
VERIFIED = "v"
REKEY = "rk"
UP = "up"
DOWN = "down"
ANY = "+"    # MQTT single-level wildcard, for filters
USER = "%u"  # Mosquitto acl_file pattern: the connecting client's username (a device id)

# Every module-level name costs a board heap (a qstr and a slot in the module's dict, ~50 bytes each
# under MicroPython): the two prefix levels, the level count and the kind tuples are written where used.
_HEX = "0123456789abcdef"
_GATEWAY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_KINDS = (HANDSHAKE, DATA, COMMAND, VERIFIED, REKEY)


def _ok(value, chars, most):
    return isinstance(value, str) and 0 < len(value) <= most and not value.strip(chars)


def _bad(what, value, rule):
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ValueError("invalid %s %s: must be %s" % (what, shown, rule))


def is_device_id(value):
    return _ok(value, _HEX, 16) and len(value) == 16


def is_gateway_id(value):
    return _ok(value, _GATEWAY_CHARS, 32)


def is_name(value):
    """The one rule for stream and command names."""
    return _ok(value, _NAME_CHARS, 64)


def check_device_id(value):
    if not is_device_id(value):
        _bad("device id", value, "16 lowercase hex characters")
    return value


def check_gateway_id(value):
    if not is_gateway_id(value):
        _bad("gateway id", value, "1-32 characters of [a-z0-9-]")
    return value


def check_name(value, what="stream name"):
    if not is_name(value):
        _bad(what, value, "1-64 characters of [A-Za-z0-9_-]")
    return value


def _build(kind, gateway, device, last, wild):
    if gateway != ANY or not wild:
        check_gateway_id(gateway)
    if not (wild and (device == ANY or device == USER)):
        check_device_id(device)
    if kind == HANDSHAKE or kind == REKEY:  # last level "up" or "down"
        if last != UP and last != DOWN:
            _bad("handshake direction" if kind == HANDSHAKE else "re-key direction", last, "'up' or 'down'")
    elif last != ANY or not wild:
        check_name(last, "command name" if kind == COMMAND else "stream name")
    return "/".join((PREFIX, kind, gateway, device, last))


def handshake_up(gateway, device):
    return _build(HANDSHAKE, gateway, device, UP, False)


def handshake_down(gateway, device):
    return _build(HANDSHAKE, gateway, device, DOWN, False)


def data(gateway, device, stream):
    return _build(DATA, gateway, device, stream, False)


def command(gateway, device, name):
    return _build(COMMAND, gateway, device, name, False)


def verified(gateway, device, stream):
    return _build(VERIFIED, gateway, device, stream, False)


def rekey_up(gateway, device):
    return _build(REKEY, gateway, device, UP, False)


def rekey_down(gateway, device):
    return _build(REKEY, gateway, device, DOWN, False)


def _check_kind(kind):
    if kind not in _KINDS:
        _bad("topic kind", kind, "one of " + ", ".join(_KINDS))
    return kind


def topic_filter(kind, gateway=ANY, device=ANY, last=ANY):
    """A subscription filter or ACL topic: identifiers, ANY, or USER in the device's place."""
    return _build(_check_kind(kind), gateway, device, last, True)


def every(kind=None):
    """The multi-level filter of one kind (``diams/v1/v/#``), or of every DIAMS topic."""
    if kind is None:
        return PREFIX + "/#"
    return PREFIX + "/" + _check_kind(kind) + "/#"


def parse(topic):
    """A concrete topic -> (kind, gateway, device, last), or None when it is not a DIAMS v1 topic.

    ``topic`` is str or bytes (as MQTT clients deliver it); ``last`` is "up"/"down" for handshakes and
    re-keying,
    the stream or command name otherwise. Every identifier is checked: a returned tuple is safe.
    The checks are inlined (not is_*()): the gateway runs this on every message.
    """
    if not isinstance(topic, str):
        try:
            topic = (topic if isinstance(topic, bytes) else bytes(topic)).decode()
        except (TypeError, ValueError):
            return None
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "diams" or parts[1] != "v1":  # PREFIX, then four levels
        return None
    kind, gateway, device, last = parts[2], parts[3], parts[4], parts[5]
    if (len(device) != 16 or device.strip(_HEX) or not 0 < len(gateway) <= 32
            or gateway.strip(_GATEWAY_CHARS)):
        return None
    if kind == HANDSHAKE or kind == REKEY:
        if last != UP and last != DOWN:
            return None
    elif (kind != DATA and kind != COMMAND and kind != VERIFIED) or not 0 < len(last) <= 64 \
            or last.strip(_NAME_CHARS):
        return None
    return kind, gateway, device, last
