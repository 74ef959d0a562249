"""What a user would pick instead of DIAMS, measured on the same broker binary in the same `make bench`.

Two peers, each a private Mosquitto (the same binary DIAMS's benchmarks use) with a TLS 1.3 listener on
loopback, and ``PEER_DEVICES`` (1,000) devices that authenticate by connecting:

* ``peer_mtls_*``: TLS client certificates — ``require_certificate true`` and
  ``use_identity_as_username true``; each device holds its own ECDSA P-256 certificate from a test CA.
  This is what AWS IoT Core and Azure DPS (X.509 attestation) do at the transport.
* ``peer_tls_password_*``: TLS without client certificates, plus a ``password_file`` with one
  PBKDF2-SHA512 (``$7$``, 101 iterations: what ``mosquitto_passwd`` writes by default) line per device,
  ``allow_anonymous false``.

An authentication is one fresh TCP connection, the TLS handshake, an MQTT CONNECT and its CONNACK (code 0),
timed from the connect call to the CONNACK; the device then sends DISCONNECT. All 1,000 devices
authenticate once per round with at most ``IN_FLIGHT`` (200) in flight, for ``ROUNDS`` (3) rounds after a
warm-up round; ``*_connects_per_s`` is the median round's rate, ``*_p50_ms`` / ``*_p99_ms`` pool the
rounds, ``*_broker_cpu_us_per_auth`` the broker's CPU (utime + stime from /proc) per authentication and
``*_client_cpu_us_per_auth`` this process's (the load generator shares the 2 cores with the broker, as
DIAMS's own end-to-end benchmark does).

``e2e_vs_mtls_ratio``: DIAMS end-to-end handshakes/s (``e2e_handshakes_per_s``, measured by
``bench_gateway`` earlier in the same `make bench`: modules run in name order) over the mTLS peer's
authentications/s. The two are not the same act, and the report says so: a DIAMS handshake runs on an
MQTT connection the device already holds (two round trips, symmetric keys, the OTP counter made durable
by the gateway), while a peer authentication is a new TCP + TLS 1.3 connection (ECDHE + ECDSA on both
sides). A DIAMS device on TLS pays that TLS handshake once per connection too (``e2e_tls_vs_plain``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import secrets
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim.broker import MosquittoBroker
from gateway.mqtt import codec

DEVICES = int(os.environ.get("PEER_DEVICES", "1000"))
IN_FLIGHT = 200
ROUNDS = 3
RESULTS = Path(__file__).resolve().parent / "results.json"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


class TestPki:
    """A throwaway CA, a server certificate for 127.0.0.1, and one client certificate per device."""

    def __init__(self, directory: Path, devices: int) -> None:
        self.directory = directory
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _pem(
            directory / "ca.pem", _cert("diams bench CA", ca_key, "diams bench CA", ca_key, ca=True)
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        self.server_cert = _pem(
            directory / "server.pem", _cert("localhost", server_key, "diams bench CA", ca_key, server=True)
        )
        self.server_key = _pem(directory / "server.key", server_key)
        self.clients: list[tuple[Path, Path]] = []
        for i in range(devices):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(f"dev-{i:05d}", key, "diams bench CA", ca_key)
            self.clients.append(
                (_pem(directory / f"dev-{i}.pem", cert), _pem(directory / f"dev-{i}.key", key))
            )

    def context(self, client: int | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if client is not None:
            cert, key = self.clients[client]
            ctx.load_cert_chain(str(cert), str(key))
        return ctx


def pbkdf2_line(user: str, password: str) -> str:
    """A mosquitto 2.0 ``$7$`` password-file line (PBKDF2-SHA512, 101 iterations: its default)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _authenticate(
    port: int, ctx: ssl.SSLContext, client_id: str, username: str | None, password: str | None
) -> float:
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 30
    )
    try:
        writer.write(
            codec.connect(
                client_id.encode(),
                username=None if username is None else username.encode(),
                password=None if password is None else password.encode(),
            )
        )
        connack = await asyncio.wait_for(reader.readexactly(4), 30)
        if connack[0] >> 4 != codec.CONNACK or connack[3] != 0:
            raise RuntimeError(f"{client_id}: refused by the broker (CONNACK {connack.hex()})")
        elapsed = time.perf_counter() - t0
        writer.write(b"\xe0\x00")  # DISCONNECT
        await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
    return elapsed


async def _round(
    port: int, contexts: list[ssl.SSLContext], creds: Callable[[int], tuple[str | None, str | None]]
) -> list[float]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> float:
        async with gate:
            user, password = creds(i)
            return await _authenticate(port, contexts[i], f"dev-{i:05d}", user, password)

    return list(await asyncio.gather(*(one(i) for i in range(len(contexts)))))


def _measure(
    broker: MosquittoBroker,
    contexts: list[ssl.SSLContext],
    creds: Callable[[int], tuple[str | None, str | None]],
    prefix: str,
) -> dict[str, float]:
    asyncio.run(_round(broker.port, contexts, creds))  # warm-up
    rates: list[float] = []
    samples: list[float] = []
    broker_cpu = client_cpu = 0.0
    for _ in range(ROUNDS):
        b0, c0, t0 = _cpu_seconds(broker.pid), time.process_time(), time.perf_counter()
        samples += asyncio.run(_round(broker.port, contexts, creds))
        elapsed = time.perf_counter() - t0
        broker_cpu += _cpu_seconds(broker.pid) - b0
        client_cpu += time.process_time() - c0
        rates.append(len(contexts) / elapsed)
    samples.sort()
    total = len(contexts) * ROUNDS
    return {
        f"{prefix}_connects_per_s": statistics.median(rates),
        f"{prefix}_p50_ms": samples[len(samples) // 2] * 1e3,
        f"{prefix}_p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e3,
        f"{prefix}_broker_cpu_us_per_auth": broker_cpu / total * 1e6,
        f"{prefix}_client_cpu_us_per_auth": client_cpu / total * 1e6,
    }


def _tls_lines(pki: TestPki) -> list[str]:
    return [
        f"cafile {pki.ca}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "tls_version tlsv1.3",
    ]


def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="diams-bench-peers-") as tmp:
        directory = Path(tmp)
        os.chmod(directory, 0o755)  # the broker drops to its own user and must read the certificates
        pki = TestPki(directory, DEVICES)
        for path in directory.iterdir():
            os.chmod(path, 0o644)

        # Peer 1: TLS client certificates, the certificate's CN is the username. The runner writes its
        # `listener` line first, so these TLS options apply to that listener.
        mtls = MosquittoBroker(
            max_queued_messages=1000,
            extra_config=[
                *_tls_lines(pki),
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
            ],
        )
        with mtls:
            contexts = [pki.context(i) for i in range(DEVICES)]
            figures.update(_measure(mtls, contexts, lambda i: (None, None), "peer_mtls"))

        # Peer 2: TLS (server certificate only) + a PBKDF2 password file.
        passwords = [secrets.token_hex(16) for _ in range(DEVICES)]
        tlspw = MosquittoBroker(max_queued_messages=1000)
        pwfile = tlspw.write_file(
            "passwords",
            "".join(pbkdf2_line(f"dev-{i:05d}", p) + "\n" for i, p in enumerate(passwords)),
            0o640,
        )
        tlspw.extra_config += [*_tls_lines(pki), f"password_file {pwfile}", "allow_anonymous false"]
        with tlspw:
            plain = pki.context()
            figures.update(
                _measure(
                    tlspw, [plain] * DEVICES, lambda i: (f"dev-{i:05d}", passwords[i]), "peer_tls_password"
                )
            )

    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    e2e = previous.get("e2e_handshakes_per_s")
    if e2e:
        figures["e2e_vs_mtls_ratio"] = e2e / figures["peer_mtls_connects_per_s"]
        figures["e2e_vs_tls_password_ratio"] = e2e / figures["peer_tls_password_connects_per_s"]
    figures["peer_devices"] = float(DEVICES)
    return figures
