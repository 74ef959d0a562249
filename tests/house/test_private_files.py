"""One way to write a secret file and one way to check it (``device_agent.private``), used everywhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from device_agent.private import KeystoreError, check_private, write_private

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("device_agent", "gateway", "ledger_bridge", "firmware_sim")
# files that still open something 0600 by hand, each with its reason
KNOWN = {
    "device_agent/private.py": "the one writer",
    "ledger_bridge/embedded/_store.py": "a lock file (flock), not a secret: it holds nothing",
}


def test_a_secret_file_is_0600_from_the_start_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "deep" / "key", b"s3cret")
    finally:
        os.umask(old)
    path = tmp_path / "deep" / "key"
    assert path.read_bytes() == b"s3cret" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["key"]  # no temporary file left behind


def test_a_leftover_world_readable_temporary_file_does_not_widen_the_secret(tmp_path: Path) -> None:
    leftover = tmp_path / f".key.{os.getpid()}.tmp"
    leftover.write_bytes(b"old")
    leftover.chmod(0o666)
    write_private(tmp_path / "key", b"new")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600


def test_replacing_and_exclusive_creation(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_private(path, b"one")
    write_private(path, b"two")
    assert path.read_bytes() == b"two"
    with pytest.raises(FileExistsError) as refused:
        write_private(path, b"three", exclusive=True)
    assert refused.value.filename == str(path)
    assert path.read_bytes() == b"two" and sorted(p.name for p in tmp_path.iterdir()) == ["key"]
    write_private(tmp_path / "new", b"x", exclusive=True)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610, 0o601])
def test_a_secret_file_open_to_others_is_refused_without_quoting_it(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key"
    write_private(path, b"do-not-print-me")
    check_private(path)
    path.chmod(mode)
    with pytest.raises(KeystoreError, match="chmod 600") as refused:
        check_private(path, "device key")
    assert "device key" in str(refused.value) and "do-not-print-me" not in str(refused.value)


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot read key file"):
        check_private(tmp_path / "absent")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeystoreError, match="not a regular file"):
        check_private(tmp_path / "dir")


def test_every_package_writes_and_checks_secret_files_through_the_one_module() -> None:
    by_hand = re.compile(r"0o600|0o077|S_IRWXG|S_IRWXO")
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = path.relative_to(ROOT).as_posix()
            if "node_modules" in path.parts or name in KNOWN:
                continue
            found += [f"{name}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                      if by_hand.search(line)]
    assert found == []


def test_one_keystore_error_type() -> None:
    import device_agent.agent
    import ledger_bridge
    from ledger_bridge import errors

    assert device_agent.agent.KeystoreError is ledger_bridge.KeystoreError is errors.KeystoreError
    assert ledger_bridge.KeystoreError is KeystoreError
