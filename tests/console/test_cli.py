"""`diams-console` as an operator starts it: a process on a channel made with `diams-ledger`, printing its
URL, serving the sign-in page and the API description, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def test_console_command_serves_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "DIAMS_PASSPHRASE": "console cli passphrase"}
    chain = ["--embedded", str(tmp_path / "chain.sqlite")]

    def ledger(*argv: str) -> str:
        done = subprocess.run(
            [str(BIN / "diams-ledger"), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    address = ledger("keys", "create", "--out", str(tmp_path / "admin.json")).strip()
    ledger(*chain, "fund", address)
    ledger(
        *chain, "--keystore", str(tmp_path / "admin.json"), "deploy", "--out", str(tmp_path / "channel.json")
    )
    url_file = tmp_path / "url"
    proc = subprocess.Popen(
        [
            str(BIN / "diams-console"),
            *chain,
            "--channel",
            str(tmp_path / "channel.json"),
            "--index",
            str(tmp_path / "index.sqlite"),
            "--port",
            "0",
            "--url-file",
            str(url_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not url_file.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the console never listened"
            time.sleep(0.2)
        url = url_file.read_text().strip()
        with urllib.request.urlopen(url + "login", timeout=10) as resp:
            page = resp.read().decode()
            assert resp.status == 200 and "Sign in" in page
            assert (
                resp.headers["X-Frame-Options"] == "DENY"
                and "nosniff" in resp.headers["X-Content-Type-Options"]
            )
        with urllib.request.urlopen(url + "openapi.json", timeout=10) as resp:
            assert json.loads(resp.read())["info"]["title"] == "DIAMS console API"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"diams-console: {url}" in out
