# Events the roles hand back to their adapters. An authentication outcome is an event, not an
# exception. Reprs never show key material.


class Authenticated:
    """Both sides proved knowledge of K_dg in this run; ``session`` protects the data after it."""

    counter = None  # gateway side: the HELLO's counter and epoch (for the audit); class defaults, so
    epoch = None    # the device's event holds one attribute (heap per handshake on a board)

    def __init__(self, session, counter=None, epoch=None):
        self.session = session
        if counter is not None:
            self.counter = counter
            self.epoch = epoch

    def __repr__(self):
        return "Authenticated(%r)" % (self.session,)


class Rejected:
    """A handshake or message was refused. ``epoch`` is the peer's unauthenticated epoch hint."""

    def __init__(self, device_id, reason, counter=None, epoch=0):
        self.device_id = device_id
        self.reason = reason
        self.counter = counter
        self.epoch = epoch

    def __repr__(self):
        return "Rejected(%s, %s, counter=%r)" % (_hex(self.device_id), self.reason, self.counter)


class Ignored:
    """A message that changes nothing (duplicate, unexpected in this state, stray)."""

    def __init__(self, reason):
        self.reason = reason

    def __repr__(self):
        return "Ignored(%s)" % self.reason


def _hex(b):
    try:
        return b.hex()
    except AttributeError:
        return repr(b)
