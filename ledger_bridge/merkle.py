"""Merkle roots for audit anchors (RFC 6962 hashing: 0x00 before leaves, 0x01 before nodes).

A gateway anchors a batch of audit records on the ledger as (root, count, first_seq, last_seq); anyone
holding the records can recompute the root, and an inclusion proof shows one record is in a batch.
"""

from __future__ import annotations

import hashlib


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """Root over already-hashed leaves (an unpaired node is promoted, as in RFC 6962)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(leaves: list[bytes], index: int) -> list[tuple[bool, bytes]]:
    """-> [(sibling_is_left, sibling)] from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index out of range")
    proof = []
    level, i = list(leaves), index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            proof.append((sibling < i, level[sibling]))
        nxt = [node_hash(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, i = nxt, i // 2
    return proof


def verify_inclusion(leaf: bytes, proof: list[tuple[bool, bytes]], root: bytes) -> bool:
    h = leaf
    for is_left, sibling in proof:
        h = node_hash(sibling, h) if is_left else node_hash(h, sibling)
    return h == root
