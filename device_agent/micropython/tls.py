# mypy: ignore-errors
# (MicroPython code: checked by mpy-cross and run under the real unix port in tests/micropython_agent/.)
#
# MQTT over TLS for the MicroPython agent, imported by agent.py only when it is given ``tls_ca`` (the
# CA certificate that signed the broker's, PEM or DER): a device on plain MQTT keeps none of this in
# its heap. MicroPython's ``ssl`` (mbedTLS) verifies the broker's certificate and its name (the
# ``server`` given, host name or IP address). umqtt.simple 1.3.4 wraps its socket with ``import ussl``,
# a name MicroPython >= 1.23 no longer has, so a small ``ussl`` of our own is registered there (newer
# umqtt takes the object as its ``ssl=`` argument directly).
import sys


def _der(ca):
    """A CA certificate as DER bytes (mbedTLS here does not take the PEM text)."""
    if ca[:10] == b"-----BEGIN":
        from binascii import a2b_base64
        ca = a2b_base64(b"".join(line for line in ca.split(b"\n") if line and line[:5] != b"-----"))
    return ca


class _Tls:
    """``wrap_socket`` with a context that requires the broker's certificate to chain to ``ca`` and to
    name the server: umqtt.simple 1.3.4's ``ussl``, and newer umqtt's ``ssl=`` argument."""

    def __init__(self, ca):
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(cadata=_der(ca))

    def wrap_socket(self, sock, server_hostname=None, **_):
        if not server_hostname:
            raise ValueError("TLS needs the server's name to verify it")
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname)


def for_umqtt(ca, server):
    """(ssl, ssl_params) for umqtt: verification of the broker's certificate against ``ca`` and
    ``server``."""
    try:
        import ussl  # an older port: umqtt's own import, given the CA and the name in ssl_params
        tls = True
        del ussl
    except ImportError:
        tls = _Tls(ca)
        sys.modules["ussl"] = tls
    return tls, {"server_hostname": server, "cert_reqs": 2, "cadata": _der(ca)}  # 2: CERT_REQUIRED
