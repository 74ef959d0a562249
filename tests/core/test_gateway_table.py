"""The gateway role moves only through ``gateway.TABLE``: the table is the one truth, and the code
consults it (taking a transition out of the table changes what the role does)."""

from __future__ import annotations

import os

import pytest

from device_agent.core import events, gateway
from device_agent.core.errors import LocalProtocolError
from firmware_sim.pair import Fleet, authenticated, handshake


def test_a_handshake_walks_the_table():
    fleet = Fleet()
    (did,) = fleet.device_ids
    gw = fleet.gateways[b"gw-a"]
    dev = fleet.device(did, b"gw-a")
    assert gw.state_of(did) == gateway.NONE
    reply, _ = gw.receive(did, dev.hello(1, os.urandom(8)), 0.0)
    assert reply is not None and gw.state_of(did) == gateway.AWAIT_PROOF
    proof, _ = dev.receive(reply, 0.0)
    forged = bytes(proof[:-1]) + bytes([proof[-1] ^ 1])
    assert gw.receive(did, forged, 0.0)[0] is None and gw.state_of(did) == gateway.AWAIT_PROOF  # bad_proof
    _, evs = gw.receive(did, proof, 0.0)
    assert any(isinstance(e, events.Authenticated) for e in evs) and gw.state_of(did) == gateway.NONE
    reply, evs = gw.receive(did, proof, 0.0)  # a PROOF in NONE: no transition, ignored
    assert reply is None and [e.reason for e in evs] == ["unexpected"]


def test_the_role_consults_the_table(monkeypatch):
    fleet = Fleet()
    (did,) = fleet.device_ids
    gw = fleet.gateways[b"gw-a"]
    table = dict(gateway.TABLE)
    del table[(gateway.NONE, "hello")]
    monkeypatch.setattr(gateway, "TABLE", table)
    with pytest.raises(LocalProtocolError, match="no hello transition from none"):
        handshake(fleet.device(did, b"gw-a"), gw, 1)


def test_without_the_bad_proof_row_a_forged_proof_is_a_local_error(monkeypatch):
    fleet = Fleet()
    (did,) = fleet.device_ids
    gw = fleet.gateways[b"gw-a"]
    dev = fleet.device(did, b"gw-a")
    table = dict(gateway.TABLE)
    del table[(gateway.AWAIT_PROOF, "bad_proof")]
    monkeypatch.setattr(gateway, "TABLE", table)
    reply, _ = gw.receive(did, dev.hello(1, os.urandom(8)), 0.0)
    proof, _ = dev.receive(reply, 0.0)
    with pytest.raises(LocalProtocolError):
        gw.receive(did, bytes(proof[:-1]) + bytes([proof[-1] ^ 1]), 0.0)
    monkeypatch.undo()
    ev, _ = handshake(fleet.device(did, b"gw-a"), gw, 2)
    assert authenticated(ev)
