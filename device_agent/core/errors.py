# Errors and rejection reasons of the DIAMS protocol core.
#
# Two kinds of failure, as in h11: a LocalProtocolError means the caller misused the core (a bug
# in the adapter); a RemoteProtocolError means the peer sent something the protocol forbids. Roles
# never let a RemoteProtocolError escape: they turn it into a rejection event carrying a reason.
#
# Reasons travel on the wire as one byte (REJECT and RESULT messages); REASONS is the one table
# mapping codes to names. Names are what events, logs and metrics use.

REASONS = (
    "ok",                 # 0  granted
    "bad_message",        # 1  truncated, oversize, wrong version or type, garbage
    "unknown_device",     # 2  not in the gateway's identity index
    "not_active",         # 3  device suspended, revoked, not yet activated...
    "stale_epoch",        # 4  HELLO names another identity epoch than the ledger's
    "bad_otp",            # 5  HOTP value does not verify (garbage, wrong key, wrong firmware)
    "replay",             # 6  counter already used and no live proof followed
    "counter_window",     # 7  retired: gateways accept any counter above the floor (kept for the code)
    "bad_proof",          # 8  device's PROOF tag does not verify
    "timeout",            # 9  peer did not answer in time
    "rate_limited",       # 10
    "busy",               # 11 gateway at its pending-handshake bound
    "clone",              # 12 a live proof with an already-used counter: two holders of one key
    "denied",             # 13 authenticated, but the policy grants nothing
    "unexpected",         # 14 a message not expected in this state
    "bad_gateway_proof",  # 15 device side: the CHALLENGE tag does not verify
    "bad_result",         # 16 device side: RESULT tag does not verify
    "forged",             # 17 data/command MAC does not verify
    "expired",            # 18 session lifetime over
    "no_session",         # 19 gateway -> device, REJECT on the handshake topic: "I hold no session for
                          #    you" (it restarted, or lifted a quarantine); unauthenticated: at most
                          #    one handshake follows (core/policy.py, AgentPolicy.no_session)
)


def reason_name(code):
    if 0 <= code < len(REASONS):
        return REASONS[code]
    return "bad_message"


class ProtocolError(Exception):
    """Base of the core's exceptions."""


class LocalProtocolError(ProtocolError):
    """The caller misused the core (wrong state, bad argument)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; ``reason`` is a name from REASONS."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason
