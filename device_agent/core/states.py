# The device role's state transitions (device.py drives them); the gateway role's table is beside
# the gateway role, in gateway.py (boards never import it, so it costs them no heap).
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

IDLE = "idle"
HELLO_SENT = "hello_sent"
PROOF_SENT = "proof_sent"
AUTHENTICATED = "authenticated"
FAILED = "failed"

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

def advance(table, state, event):
    """The next state, or None when the table has no such transition."""
    return table.get((state, event))
