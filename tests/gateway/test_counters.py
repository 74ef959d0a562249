"""Counter floors: group commit, durability across kill -9, never lower."""

import asyncio
import subprocess
import sys

import pytest

from gateway.counters import CounterStore


@pytest.mark.asyncio
async def test_one_commit_per_loop_turn_and_floors_only_rise(tmp_path):
    store = CounterStore(tmp_path / "c.db")
    futs = [store.accept(b"d%07d" % i, 0, 5) for i in range(50)]
    futs.append(store.accept(b"d0000000", 0, 3))  # lower: must not lower the floor
    await asyncio.gather(*futs)
    assert store.commits == 1
    assert store.floor(b"d0000000", 0) == 5 and store.floor(b"d0000000", 1) == -1
    await store.accept(b"d0000000", 0, 9)
    assert store.floor(b"d0000000", 0) == 9 and store.commits == 2
    store.close()
    assert CounterStore(tmp_path / "c.db").floors()[(b"d0000000", 0)] == 9


def test_acknowledged_counters_survive_kill_9(tmp_path):
    path = tmp_path / "c.db"
    code = (
        "import asyncio, sys; from pathlib import Path; from gateway.counters import CounterStore\n"
        "async def main():\n"
        "    s = CounterStore(Path(sys.argv[1])); i = 0\n"
        "    while True:\n"
        "        i += 1; await s.accept(sys.argv[2].encode(), 0, i); print(i, flush=True)\n"
        "asyncio.run(main())\n"
    )
    for round_ in range(3):
        dev = f"dev{round_:05d}"
        with subprocess.Popen([sys.executable, "-c", code, str(path), dev], stdout=subprocess.PIPE) as proc:
            # killed mid-stream, after a varying number of acknowledgements (not after a sleep that a
            # loaded machine can spend starting the interpreter)
            head = [proc.stdout.readline() for _ in range(20 + 37 * round_)]
            proc.kill()
            acked = [int(x) for x in b"".join(head).split() + proc.stdout.read().split()]
        assert acked, "the writer acknowledged nothing"
        floor = CounterStore(path).floor(dev.encode(), 0)
        # every counter acknowledged before the kill is durable (the floor may be one ahead: committed,
        # not yet printed)
        assert floor >= acked[-1]


def test_the_nonce_of_the_floor_is_kept_with_it(tmp_path):
    store = CounterStore(tmp_path / "c.db")
    store.commit_now(b"dev00001", 0, 4, b"n" * 8)
    store.commit_now(b"dev00001", 0, 3, b"x" * 8)  # lower: neither counter nor nonce change
    store.close()
    assert CounterStore(tmp_path / "c.db").floor_and_nonce(b"dev00001", 0) == (4, b"n" * 8)
    assert CounterStore(tmp_path / "c.db").floor_and_nonce(b"dev00002", 0) == (-1, None)


@pytest.mark.parametrize("kind", ["counters", "index"])
def test_the_state_files_open_alike_and_their_failures_keep_their_package_error(tmp_path, kind):
    """Both state databases come from ``ledger_bridge.state_db.open_state_db``: WAL, the durability each
    needs (an accepted counter: FULL; the index, which the ledger can rebuild: NORMAL), and a file that
    cannot be opened fails with the package's own error, naming the file, never sqlite3's."""
    from gateway.counters import CounterStoreError
    from ledger_bridge.index import IdentityIndex, IndexError_

    make, error, sync = {
        "counters": (CounterStore, CounterStoreError, 2),
        "index": (IdentityIndex, IndexError_, 1),
    }[kind]
    store = make(tmp_path / "state.sqlite")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == sync
    assert store._db.isolation_level is None  # autocommit: each writer says BEGIN itself
    store.close()
    (tmp_path / "not-a-db").write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(error, match=r"cannot open .*not-a-db: file is not a database") as caught:
        make(tmp_path / "not-a-db")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_bans_are_kept_until_they_end_and_the_record_stays_bounded(tmp_path):
    """The gateway's ban records (wall-clock ends): they outlive a reopening, an ended one is dropped, at
    most ``keep`` are kept (those ending soonest go first), and lifting one ban never lifts a later one."""
    path = tmp_path / "c.db"
    store = CounterStore(path)
    for i in range(5):
        store.set_ban(b"dev%d" % i, 1_000.0 + i, now=900.0, keep=3)
    assert store.bans(900.0) == {b"dev2": 1_002.0, b"dev3": 1_003.0, b"dev4": 1_004.0}
    store.close()
    store = CounterStore(path)  # a restart
    assert store.bans(1_002.0) == {b"dev3": 1_003.0, b"dev4": 1_004.0}  # dev2's ended: dropped
    assert store._db.execute("SELECT COUNT(*) FROM bans").fetchone()[0] == 2
    store.set_ban(b"dev3", 1_500.0, now=1_002.5, keep=3)  # banned again: the later end replaces it
    store.lift_ban(b"dev3", 1_003.0)  # the earlier ban's end lifts nothing
    store.lift_ban(b"dev4", 1_004.0)
    assert store.bans(1_003.5) == {b"dev3": 1_500.0}
    store.close()
