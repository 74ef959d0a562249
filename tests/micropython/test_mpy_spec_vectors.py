"""PROTOCOL.md v1.1's device-core vectors (tests/vectors/spec_v1_1.json) under real MicroPython."""

import json

import pytest

from firmware_sim.mpy import runner
from tests.conftest import require
from tests.core.vectors import load

pytestmark = pytest.mark.micropython


def test_spec_v1_1_vectors_under_micropython():
    require(runner.MICROPYTHON is not None, "micropython")
    proc = runner.run("check_spec_vectors.py", str(runner.VECTORS))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    v = load("spec_v1_1.json")
    assert got["hmac"] == v["otp_truncation"]["hmac"] and got["otp"] == v["otp_truncation"]["otp"]
    assert got["hello0"] == v["first_counter"]["hello"]
    assert got["stream_lp"] == v["encodings"]["stream_lp"]
    assert got["tag"] == v["data_tag"]["tag"]
    assert got["password"] == v["broker_password"]["mqtt_password_ascii"]
    assert got["password_next"] == v["broker_password"]["next_epoch_mqtt_password_ascii"]
    assert got["reject"] == [v["reject"]["bad_otp_no_hint"], v["reject"]["stale_epoch_hint_3"]]
