# Every state transition of both protocol roles, in this one table file.
#
# A role moves only through `advance`; a (state, event) pair missing from its table is a message
# the role does not expect now: the role ignores it (remote) or raises LocalProtocolError (local).
#
# Device role, one handshake with one gateway:
#
#   IDLE --hello--> HELLO_SENT --challenge ok--> PROOF_SENT --result granted--> AUTHENTICATED
#                        |                            |
#                        +--reject / bad tag--> FAILED <--reject / denied / bad tag / timeout
#   "hello" is allowed from every state: a retry, a re-authentication, a failover to another gateway.
#
# Gateway role, per device: at most one pending handshake.
#
#   NONE --hello (fresh counter, or used counter + valid OTP = clone probe)--> AWAIT_PROOF
#   AWAIT_PROOF --hello (fresh counter)--> AWAIT_PROOF (newer handshake replaces it)
#   AWAIT_PROOF --bad_proof--> AWAIT_PROOF (a forged PROOF must not cancel the real handshake)
#   AWAIT_PROOF --proof / timeout--> NONE (authenticated, clone detected, or rejected)
#   A PROOF in NONE has no transition: it is ignored (remote). GatewayRole._advance applies this table.

IDLE = "idle"
HELLO_SENT = "hello_sent"
PROOF_SENT = "proof_sent"
AUTHENTICATED = "authenticated"
FAILED = "failed"

NONE = "none"
AWAIT_PROOF = "await_proof"

DEVICE = {
    (IDLE, "hello"): HELLO_SENT,
    (HELLO_SENT, "hello"): HELLO_SENT,
    (PROOF_SENT, "hello"): HELLO_SENT,
    (AUTHENTICATED, "hello"): HELLO_SENT,
    (FAILED, "hello"): HELLO_SENT,
    (HELLO_SENT, "challenge"): PROOF_SENT,
    (HELLO_SENT, "fail"): FAILED,
    (PROOF_SENT, "fail"): FAILED,
    (PROOF_SENT, "granted"): AUTHENTICATED,
}

GATEWAY = {
    (NONE, "hello"): AWAIT_PROOF,
    (AWAIT_PROOF, "hello"): AWAIT_PROOF,
    (AWAIT_PROOF, "bad_proof"): AWAIT_PROOF,
    (AWAIT_PROOF, "proof"): NONE,
    (AWAIT_PROOF, "timeout"): NONE,
}


def advance(table, state, event):
    """The next state, or None when the table has no such transition."""
    return table.get((state, event))
