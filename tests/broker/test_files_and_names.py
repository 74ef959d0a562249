"""Identifiers, secrets, the $6$ hash and atomic file rewrites (no broker, only mosquitto_passwd)."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from gateway.broker import (
    ANY,
    COMMAND,
    DATA,
    HANDSHAKE,
    PREFIX,
    USER,
    VERIFIED,
    AuthorizeGateway,
    BrokerSecret,
    CutOff,
    Enroll,
    Grant,
    InvalidIdentifier,
    MosquittoEnforcer,
    ReloadFailed,
    UnknownDevice,
    check_device_id,
    check_gateway_id,
    data_topic,
    every,
    gateway_username,
    handshake_up,
    mosquitto_sha512_hash,
    topic_filter,
    verified_topic,
)
from tests.conftest import require

DEV = "0123456789abcdef"
BAD_DEVICE_IDS = ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "+", "#", "0123456789abcde/",
                  "0123456789abcde+", "0123456789abcde#", "$SYS", "", "0123456789abcde\n", 1234, None]
BAD_GATEWAY_IDS = ["", "a" * 33, "GW", "gw/1", "gw+", "gw#", "gw 1", "gw:1", "gw\n", "$gw"]
BAD_STREAMS = ["", "a/b", "+", "#", "t\n", "t:1", "x" * 65, "$t"]


@pytest.mark.parametrize("bad", BAD_DEVICE_IDS)
def test_bad_device_ids_are_refused_with_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidIdentifier, match=r"invalid device id .*16 lowercase hex"):
        check_device_id(bad)
    with pytest.raises(InvalidIdentifier):
        Enroll(device_id=bad, secret=BrokerSecret.generate())  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # InvalidIdentifier is a ValueError too
        CutOff(device_id=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_GATEWAY_IDS)
def test_bad_gateway_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifier, match="invalid gateway id"):
        check_gateway_id(bad)
    with pytest.raises(InvalidIdentifier):
        handshake_up(bad, DEV)


@pytest.mark.parametrize("bad", BAD_STREAMS)
def test_bad_stream_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifier, match="invalid stream name"):
        Grant(device_id=DEV, streams=frozenset({"ok", bad}))
    with pytest.raises(InvalidIdentifier):
        data_topic("gw-1", DEV, bad)


def test_a_stream_set_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError):
        Grant(device_id=DEV, streams="temp")  # type: ignore[arg-type]


def test_topics_and_usernames() -> None:
    assert handshake_up("gw-1", DEV) == "/".join((PREFIX, HANDSHAKE, "gw-1", DEV, "up"))
    assert data_topic("gw-1", DEV, "temp") == "/".join((PREFIX, DATA, "gw-1", DEV, "temp"))
    assert verified_topic("gw-1", DEV, "temp") == "/".join((PREFIX, VERIFIED, "gw-1", DEV, "temp"))
    with pytest.raises(InvalidIdentifier):
        verified_topic("gw+", DEV, "temp")
    assert gateway_username("gw-1") == "gateway-gw-1"
    assert gateway_username("gw-1", 2) == "gateway-gw-1.2"


def test_secrets_never_show_in_reprs_or_errors() -> None:
    secret = BrokerSecret("s3cret-s3cret-s3cret")
    for text in (repr(secret), str(secret), repr(Enroll(device_id=DEV, secret=secret)),
                 repr(AuthorizeGateway(gateway_id="gw", secret=secret))):
        assert "s3cret" not in text
    with pytest.raises(ValueError) as info:
        BrokerSecret("short-secret")
    assert "short-secret" not in str(info.value)
    with pytest.raises(ValueError):
        BrokerSecret("a-long-enough-secret\nwith a newline")


def test_hash_format_matches_the_mosquitto_spec() -> None:
    salt = bytes(range(12))
    line = mosquitto_sha512_hash(BrokerSecret("0123456789abcdefXYZ"), salt=salt)
    _, kind, salt_b64, digest_b64 = line.split("$")
    assert kind == "6" and base64.b64decode(salt_b64) == salt and len(base64.b64decode(digest_b64)) == 64


def test_hash_equals_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    require(tool is not None, "mosquitto_passwd (package mosquitto)")
    assert tool is not None
    secret = BrokerSecret("correct-horse-battery-staple")
    pwfile = tmp_path / "pw"
    pwfile.touch()
    subprocess.run([tool, "-H", "sha512", "-b", str(pwfile), DEV, secret.reveal()], check=True)
    user, field = pwfile.read_text().strip().split(":", 1)
    salt = base64.b64decode(field.split("$")[2])
    assert user == DEV
    assert mosquitto_sha512_hash(secret, salt=salt) == field


def make_enforcer(tmp_path: Path, **kw: object) -> MosquittoEnforcer:
    return MosquittoEnforcer(password_file=tmp_path / "pw", acl_file=tmp_path / "acl",
                             reload=lambda: None, **kw)  # type: ignore[arg-type]


def test_a_failing_batch_changes_nothing(tmp_path: Path) -> None:
    enforcer = make_enforcer(tmp_path)
    enforcer.stage([Enroll(device_id=DEV, secret=BrokerSecret.generate())])
    other = "fedcba9876543210"
    with pytest.raises(UnknownDevice, match=f"device {other}.*not enrolled"):
        enforcer.stage([CutOff(device_id=DEV), Grant(device_id=other, streams=frozenset({"t"}))])
    assert enforcer.state_of(DEV) == "enrolled"
    with pytest.raises(UnknownDevice):  # cut off earlier in the same batch
        enforcer.stage([CutOff(device_id=DEV), Grant(device_id=DEV, streams=frozenset({"t"}))])
    assert enforcer.state_of(DEV) == "enrolled"


def test_files_are_replaced_atomically_with_the_right_mode(tmp_path: Path) -> None:
    enforcer = make_enforcer(tmp_path)
    enforcer.stage([Enroll(device_id=DEV, secret=BrokerSecret.generate()),
                    Grant(device_id=DEV, streams=frozenset({"temp"}))])
    enforcer.write_files()
    original = enforcer.acl_file.read_text()
    old_file = enforcer.acl_file.open()  # still the old inode after a rename; rewritten if edited in place
    stop, seen_bad = threading.Event(), []

    def reader() -> None:
        while not stop.is_set():
            text = enforcer.acl_file.read_text()
            if not text.endswith("topic read $SYS/broker/version\n"):
                seen_bad.append(text[-80:])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            enforcer.stage([Enroll(device_id=f"{i:016x}", secret=BrokerSecret.generate()),
                            Grant(device_id=f"{i:016x}", streams=frozenset({"s"}))])
            enforcer.write_files()
    finally:
        stop.set()
        thread.join()
    assert not seen_bad, "a reader saw a partly written file"
    with old_file:
        assert old_file.read() == original, "replaced by rename, not rewritten in place"
    assert stat.S_IMODE(os.stat(enforcer.password_file).st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acl", "pw"], "no temporary file left behind"
    assert enforcer.password_file.read_text().count("\n") == 201


def test_acl_lists_exactly_the_granted_topics(tmp_path: Path) -> None:
    enforcer = make_enforcer(tmp_path, rights="per_device")
    enforcer.stage([AuthorizeGateway(gateway_id="gw", secret=BrokerSecret.generate()),
                    Enroll(device_id=DEV, secret=BrokerSecret.generate()),
                    Enroll(device_id="fedcba9876543210", secret=BrokerSecret.generate()),
                    Grant(device_id=DEV, streams=frozenset({"temp", "hum"}))])
    enforcer.write_files()
    acl = enforcer.acl_file.read_text()
    writes = [f"topic write {topic_filter(DATA, 'gw', DEV, s)}" for s in ("hum", "temp")]
    assert "\n".join([f"user {DEV}", *writes]) in acl
    assert "fedcba9876543210" not in acl  # enrolled only: covered by the two %u patterns
    # the gateway level of every pattern is a registered gateway id, never `+`
    pre_auth = [f"pattern write {topic_filter(HANDSHAKE, 'gw', USER, 'up')}",
                f"pattern read {topic_filter(HANDSHAKE, 'gw', USER, 'down')}"]
    assert "\n".join([*pre_auth, ""]) in acl
    assert "/+/%u/" not in acl and f"/+/{DEV}/" not in acl
    # a gateway reads its own handshakes and data, writes only topics that carry its own id
    assert "\n".join([
        f"user {gateway_username('gw')}",
        f"topic read {topic_filter(HANDSHAKE, 'gw', ANY, 'up')}",
        f"topic write {topic_filter(HANDSHAKE, 'gw', ANY, 'down')}",
        f"topic read {topic_filter(DATA, 'gw')}",
        f"topic read {every(VERIFIED)}",
        f"topic write {topic_filter(VERIFIED, 'gw')}",
        f"topic write {topic_filter(COMMAND, 'gw')}",
    ]) in acl


def test_patterns_mode_has_no_device_blocks(tmp_path: Path) -> None:
    enforcer = make_enforcer(tmp_path)
    assert enforcer.rights == "patterns"
    enforcer.stage([AuthorizeGateway(gateway_id="gw", secret=BrokerSecret.generate()),
                    Enroll(device_id=DEV, secret=BrokerSecret.generate()),
                    Grant(device_id=DEV, streams=frozenset({"temp"}))])
    enforcer.write_files()
    acl = enforcer.acl_file.read_text()
    assert DEV not in acl
    data = [f"pattern write {topic_filter(DATA, 'gw', USER)}",
            f"pattern read {topic_filter(COMMAND, 'gw', USER)}"]
    assert "\n".join([*data, ""]) in acl and "/+/%u/" not in acl
    assert enforcer.streams_of(DEV) == {"temp"}


@pytest.mark.asyncio
async def test_a_failed_reload_is_reported_and_retried_by_the_next_change(tmp_path: Path) -> None:
    calls = []

    def reload() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ProcessLookupError(3, "No such process")

    enforcer = MosquittoEnforcer(password_file=tmp_path / "pw", acl_file=tmp_path / "acl", reload=reload,
                                 min_reload_interval=0.0, urgent_reload_interval=0.0)
    async with enforcer:
        with pytest.raises(ReloadFailed, match="could not make the broker reload"):
            await enforcer.enroll(DEV, BrokerSecret.generate())
        await enforcer.grant(DEV, ["t"])
    assert len(calls) == 2 and enforcer.state_of(DEV) == "granted"


@pytest.mark.asyncio
async def test_publishing_needs_the_context_manager(tmp_path: Path) -> None:
    enforcer = make_enforcer(tmp_path)
    with pytest.raises(RuntimeError, match="async with"):
        await enforcer.enroll(DEV, BrokerSecret.generate())


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_enforcer(tmp_path, min_reload_interval=0.1, urgent_reload_interval=0.5)
    with pytest.raises(ValueError):
        make_enforcer(tmp_path, file_mode=0o644)
    with pytest.raises(ValueError):
        make_enforcer(tmp_path, rights="strict")
