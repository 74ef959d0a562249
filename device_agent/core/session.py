# The authenticated channel after a handshake: every DATA (device -> gateway) and COMMAND
# (gateway -> device) message carries a sequence number and an 8-byte HMAC-SHA256 tag under that
# direction's session key, over the stream name, header, sequence number and payload. A receiver
# accepts strictly increasing sequence numbers only, so a replayed, reordered-back or reflected
# message is refused; the stream name in the tag stops a message being moved to another topic.
from . import wire
from .crypto import ct_equal, hmac_sha256
from .keys import lp


class Session:
    def __init__(self, device_id, gateway_id, send_key, recv_key, send_type, recv_type, expires):
        self.device_id = device_id
        self.gateway_id = gateway_id
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_type = send_type
        self._recv_type = recv_type
        self.expires = expires
        self.send_seq = 0
        self.recv_seq = 0

    def __repr__(self):
        return "Session(device=%s, gateway=%s, sent=%d, received=%d)" % (
            self.device_id.hex(), self.gateway_id.decode(), self.send_seq, self.recv_seq)

    def seal(self, stream, payload):
        """Protect ``payload`` for ``stream`` (the topic's last level); -> message bytes."""
        if len(payload) > wire.MAX_PAYLOAD:
            raise ValueError("payload larger than %d bytes" % wire.MAX_PAYLOAD)
        if self.send_seq >= 0xFFFFFFFF:
            raise ValueError("sequence numbers exhausted: authenticate again")
        self.send_seq += 1
        body = wire.sealed_body(self._send_type, self.send_seq, payload)
        return body + hmac_sha256(self._send_key, lp(stream) + body)[:wire.TAG_LEN]

    def open(self, stream, message, now):
        """Verify a received message -> (payload, None), or (None, reason) and nothing changes."""
        if now >= self.expires:
            return None, "expired"
        try:
            seq, payload, tag = wire.decode_sealed(message, self._recv_type)
        except wire.RemoteProtocolError as exc:
            return None, exc.reason
        n = len(message) - wire.TAG_LEN
        if not ct_equal(hmac_sha256(self._recv_key, lp(stream) + bytes(message[:n]))[:wire.TAG_LEN], tag):
            return None, "forged"
        if seq <= self.recv_seq:
            return None, "replay"
        self.recv_seq = seq
        return payload, None
