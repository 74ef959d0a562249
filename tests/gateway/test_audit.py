"""The audit log: hash chain, tamper detection, torn tails, Merkle anchors and inclusion proofs."""

import json
import os
import subprocess
import sys

import pytest

from gateway.audit import AuditError, AuditLog, batch_root, records, verify_file
from ledger_bridge.merkle import inclusion_proof, leaf_hash, merkle_root, verify_inclusion
from tests.waiting import wait_until


def test_chain_verifies_and_reopens(tmp_path):
    p = tmp_path / "audit.log"
    a = AuditLog(p)
    for i in range(5):
        a.append("authenticated", device="%016x" % i, counter=i)
    a.close()
    assert verify_file(p)[0] == 5
    b = AuditLog(p)
    assert b.seq == 5
    b.append("rejected", device="00", reason="bad_otp")
    b.close()
    assert verify_file(p)[0] == 6


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
def test_any_tampering_is_detected(tmp_path, tamper):
    p = tmp_path / "audit.log"
    a = AuditLog(p)
    for i in range(6):
        a.append("authenticated", device="%016x" % i)
    a.close()
    lines = p.read_bytes().splitlines(keepends=True)
    if tamper == "edit":
        rec = json.loads(lines[2])
        rec["device"] = "ffffffffffffffff"
        lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    elif tamper == "delete":
        del lines[3]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    p.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=r"audit\.log:[234]"):
        verify_file(p)


def test_torn_last_line_is_dropped_on_reopen(tmp_path):
    p = tmp_path / "audit.log"
    a = AuditLog(p)
    for i in range(3):
        a.append("authenticated", device="%016x" % i)
    a.close()
    with open(p, "ab") as f:
        f.write(b'{"seq":4,"event":"auth')  # a crash in the middle of a write
    b = AuditLog(p)
    assert b.seq == 3
    b.append("authenticated", device="aa")
    b.close()
    assert verify_file(p)[0] == 4


def test_kill_9_keeps_a_verifiable_chain(tmp_path):
    p = tmp_path / "audit.log"
    code = (
        "import sys; from pathlib import Path; from gateway.audit import AuditLog\n"
        "a = AuditLog(Path(sys.argv[1]), fsync_interval=0)\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1; a.append('authenticated', device='%016x' % i)\n"
    )
    for _ in range(3):
        with subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE) as proc:
            assert proc.stdout.readline() == b"ready\n"
            # the crash point: mid-stream, once it has appended some records (the file grows by more)
            size = p.stat().st_size if p.exists() else 0
            wait_until(lambda: p.stat().st_size > size + 4096, 10, "records appended")
            proc.kill()
        log = AuditLog(p)  # recovers the torn tail if any
        n = log.seq
        log.close()
        assert n > 0 and verify_file(p)[0] == n


def test_anchors_cover_each_record_once_and_prove_inclusion(tmp_path):
    p = tmp_path / "audit.log"
    a = AuditLog(p)
    for i in range(7):
        a.append("authenticated", device="%016x" % i)
    first = a.next_anchor()
    assert (first.first_seq, first.last_seq, first.count) == (1, 7, 7)
    a.mark_anchored(first, "0xabc")
    assert a.next_anchor() is None
    for i in range(3):
        a.append("rejected", device="%016x" % i)
    second = a.next_anchor()
    assert (second.first_seq, second.last_seq) == (8, 10)
    a.close()
    assert batch_root(p, 1, 7) == (7, first.root)
    reopened = AuditLog(p)  # anchored_seq and the unanchored tail survive a restart
    assert reopened.next_anchor() == second
    reopened.close()
    leaves = [leaf_hash(bytes.fromhex(r["hash"])) for r in records(p) if r["seq"] <= 7]
    assert merkle_root(leaves) == first.root
    for i in range(7):
        assert verify_inclusion(leaves[i], inclusion_proof(leaves, i), first.root)
    assert not verify_inclusion(leaf_hash(os.urandom(32)), inclusion_proof(leaves, 2), first.root)


class _FullDisk:
    """A file whose writes stop after ``room`` more bytes, as a full file system's do (ENOSPC)."""

    def __init__(self, f, room):
        self._f, self.room = f, room

    def write(self, data):
        if len(data) <= self.room:
            self.room -= len(data)
            return self._f.write(data)
        if self.room:
            self._f.write(data[: self.room])  # a partial line reaches the file before the error
            self.room = 0
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_a_full_disk_appends_nothing_and_the_chain_goes_on_when_it_frees(tmp_path):
    from gateway.audit import AuditUnavailable

    p = tmp_path / "audit.log"
    a = AuditLog(p)
    a.append("authenticated", device="%016x" % 1, counter=1)
    a._file = _FullDisk(a._f, room=30)
    with pytest.raises(AuditUnavailable, match="record 2 not written"):
        a.append("authenticated", device="%016x" % 2, counter=2)
    with pytest.raises(AuditUnavailable):
        a.append("rejected", device="%016x" % 3, reason="bad_otp")
    assert a.seq == 1 and verify_file(p)[0] == 1  # the partial line was cut off again
    a._file = a._f._f  # the disk has room again
    a.append("authenticated", device="%016x" % 2, counter=2)
    a.close()
    assert verify_file(p)[0] == 2
    assert [r["counter"] for r in records(p)] == [1, 2]
