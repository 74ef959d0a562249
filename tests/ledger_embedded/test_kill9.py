"""kill -9 a process writing to the embedded chain, many times: nothing returned is ever lost.

A child process sends transactions in a loop and prints each one whose receipt it got. It is
SIGKILLed at random moments (and, in one test, at the worst moment: inside a block's commit). After
each kill the chain is reopened and checked: every printed transaction is there with its block
and log, and the chain is consistent (nonce = head, storage = last log, log index = blocks).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from eth_account import Account
from web3 import Web3

from ledger_bridge.embedded import EmbeddedChain
from ledger_bridge.embedded._probe import word

REPO = Path(__file__).resolve().parents[2]
ACTOR = Account.from_key(b"\x33" * 32)
WRITER = "tests.ledger_embedded._writer"


class Writer:
    """The child process and the lines it printed, read by a thread so the pipe never fills."""

    def __init__(self, path: Path, *extra: str) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._acked = threading.Condition()
        self.stderr_path = path.with_name("writer.stderr")
        self._stderr = self.stderr_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", WRITER, str(path), bytes(ACTOR.key).hex(), *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.endswith("\n"):
                continue  # cut by the kill: never acknowledged
            if line == "ready\n":
                self.ready.set()
            else:
                with self._acked:
                    self.lines.append(line)
                    self._acked.notify_all()

    def wait_acknowledged(self, count: int, timeout: float) -> bool:
        """Waits until the child has printed ``count`` receipts (or has died)."""
        with self._acked:
            return self._acked.wait_for(
                lambda: len(self.lines) >= count or self.process.poll() is not None, timeout=timeout
            ) and len(self.lines) >= count

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()

    def acknowledged(self) -> list[tuple[bytes, int, int]]:
        rows = []
        for line in self.lines:
            tx_hash, block, value = line.split()
            rows.append((bytes.fromhex(tx_hash.removeprefix("0x")), int(block), int(value)))
        return rows


def check_chain(path: Path, acknowledged: list[tuple[bytes, int, int]]) -> int:
    """Reopen and verify; returns the head block number."""
    chain = EmbeddedChain.open(path)
    try:
        w3 = Web3(chain.provider)
        head = w3.eth.block_number
        for tx_hash, block, value in acknowledged:
            receipt = w3.eth.get_transaction_receipt(tx_hash)
            assert receipt["blockNumber"] == block and receipt["status"] == 1
            assert receipt["logs"][0]["data"] == word(value)
            assert block <= head
        if head == 0:
            return head
        # one transaction per block from one sender: its nonce is the head number
        assert w3.eth.get_transaction_count(ACTOR.address) == head
        assert w3.eth.get_block(head)["parentHash"] == w3.eth.get_block(head - 1)["hash"]
        contract = w3.eth.get_transaction_receipt(w3.eth.get_block(1)["transactions"][0])["contractAddress"]
        logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": head, "address": contract})
        assert [int.from_bytes(log["data"], "big") for log in logs] == list(range(1, head))
        assert [log["blockNumber"] for log in logs] == list(range(2, head + 1))
        if head > 1:
            stored = w3.eth.call({"to": contract, "from": ACTOR.address})
            assert int.from_bytes(stored, "big") == head - 1
        return head
    finally:
        chain.close()


def test_random_kill9_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acknowledged: list[tuple[bytes, int, int]] = []
    head = 0
    for round_ in range(8):
        with Writer(path) as writer:
            if round_ % 4 == 3:  # now and then, kill it early: while opening or deploying
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                # Kill after a random number of receipts (not a random time: on a loaded machine a
                # time-based kill proves nothing), then at a random moment of the next send.
                assert writer.ready.wait(timeout=60), writer.stderr_path.read_text()
                target = rng.randint(4, 12)
                assert writer.wait_acknowledged(target, timeout=120), writer.stderr_path.read_text()
                time.sleep(rng.uniform(0.0, 0.03))
        acknowledged += writer.acknowledged()
        new_head = check_chain(path, acknowledged)
        assert new_head >= head, f"seed {seed}: the head went back from {head} to {new_head}"
        head = new_head
    assert len(acknowledged) > 20, f"seed {seed}: too few transactions to prove anything"


def test_kill9_inside_a_block_commit_leaves_the_previous_block(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    acknowledged: list[tuple[bytes, int, int]] = []
    for crash_at in (5, 1, 3):
        with Writer(path, str(crash_at)) as writer:
            assert writer.process.wait(timeout=30) == -signal.SIGKILL
        before = acknowledged[-1][1] if acknowledged else 1
        acknowledged += writer.acknowledged()
        head = check_chain(path, acknowledged)
        # the block being committed at the kill is gone; everything before it is there
        assert head == (acknowledged[-1][1] if acknowledged else before)
