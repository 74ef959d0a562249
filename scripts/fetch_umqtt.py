#!/usr/bin/env python3
"""Fetch micropython-lib's umqtt.simple (PyPI micropython-umqtt.simple 1.3.4) into .vendor/micropython/.

The MicroPython agent's tests and benchmark run it under the unix port. Third-party code is not
committed: this script takes the sdist from PyPI (``pip download`` fails on it: it has no setup.py),
checks the pinned SHA-256 and extracts ``umqtt/simple.py``. Idempotent; stdlib only.

    python3 scripts/fetch_umqtt.py [DEST]      # DEST defaults to .vendor/micropython
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

NAME, VERSION = "micropython-umqtt.simple", "1.3.4"
FILENAME = f"{NAME}-{VERSION}.tar.gz"
SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
MEMBER = f"{NAME}-{VERSION}/umqtt/simple.py"
REPO = Path(__file__).resolve().parents[1]


def sdist_url() -> str:
    """The sdist's URL from PyPI's JSON API (the project document: it lists every release)."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{NAME}/json", timeout=30) as resp:
        releases = json.load(resp)["releases"]
    for f in releases.get(VERSION, []):
        if f["filename"] == FILENAME:
            if f["digests"]["sha256"] != SHA256:
                raise SystemExit(f"fetch_umqtt: PyPI lists another SHA-256 for {FILENAME}")
            return str(f["url"])
    raise SystemExit(f"fetch_umqtt: {FILENAME} not listed on PyPI")


def main(argv: list[str]) -> int:
    dest = Path(argv[1]) if len(argv) > 1 else REPO / ".vendor" / "micropython"
    target = dest / "umqtt" / "simple.py"
    stamp = dest / "umqtt" / ".sha256"
    if target.exists() and stamp.exists() and stamp.read_text().strip() == SHA256:
        return 0
    with urllib.request.urlopen(sdist_url(), timeout=60) as resp:  # noqa: S310
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SystemExit(f"fetch_umqtt: SHA-256 mismatch for {FILENAME}: refusing it")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"fetch_umqtt: {MEMBER} missing from the sdist")
        source = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source)
    (target.parent / "__init__.py").write_bytes(b"")
    stamp.write_text(SHA256 + "\n")
    print(f"fetch_umqtt: {NAME} {VERSION} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
