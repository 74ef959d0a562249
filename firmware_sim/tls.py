"""A throwaway CA made with ``cryptography`` for a site's TLS listener (tests, bench): a CA certificate
and a broker certificate for 127.0.0.1, written where the broker can read them, plus the mosquitto.conf
lines that turn the last listener into TLS. Its key is generated per call and never leaves the site."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class, though its name says "Test"

    ca_file: Path
    cert_file: Path
    key_file: Path

    def mosquitto_lines(self) -> list[str]:
        return [f"cafile {self.ca_file}", f"certfile {self.cert_file}", f"keyfile {self.key_file}",
                "tls_version tlsv1.2"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_test_ca(directory: Path, host: str = "127.0.0.1", write: object = None) -> TestCA:
    """``write(name, text, mode)``: how to write a file the broker reads (MosquittoBroker.write_file)."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("DIAMS test CA")).issuer_name(_name("DIAMS test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    texts = {
        "ca.crt": ca.public_bytes(pem).decode(),
        "broker.crt": cert.public_bytes(pem).decode(),
        "broker.key": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    }
    paths = {}
    for name, text in texts.items():
        if write is not None:
            paths[name] = write(name, text, 0o640)  # type: ignore[operator]
        else:
            paths[name] = directory / name
            paths[name].write_text(text)
    return TestCA(paths["ca.crt"], paths["broker.crt"], paths["broker.key"])
