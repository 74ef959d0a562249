"""A fleet on a real 3-node RabbitMQ cluster with two gateways enforcing through their HTTP endpoints:
exact rights (no data before authentication), revocation cut off across nodes, a gateway that dies while
the other keeps authorizing, and a node that dies while its devices move to another node.

The tests share one cluster (module scope) and run in file order: the node is killed last."""

from __future__ import annotations

import asyncio

import pytest

from device_agent.core import events, topics
from gateway.broker import gateway_account_permissions
from gateway.mqtt import MqttClient, MqttConnectError, MqttError
from tests.cluster.site import ClusterSite, cluster_site, crash_gateway
from tests.gateway.helpers import eventually, raw_device_client

pytestmark = pytest.mark.asyncio


async def _authenticated(site: ClusterSite, placement: dict[int, tuple[str, int]]) -> dict[int, object]:
    devs = {i: site.sim(i, gateway_id=gid, node=node) for i, (gid, node) in placement.items()}
    await asyncio.gather(*(d.connect() for d in devs.values()))
    results = await asyncio.gather(*(d.authenticate(timeout=10) for d in devs.values()))
    for i, r in zip(devs, results, strict=True):
        assert isinstance(r, events.Authenticated), (i, r)
    return devs  # type: ignore[return-value]


async def _closed(client: MqttClient | None, timeout: float = 10.0) -> bool:
    assert client is not None
    await asyncio.wait({client.closed}, timeout=timeout)  # done, with or without an error: closed
    return client.closed.done()


async def test_fleet_on_three_nodes_is_enforced_exactly_and_revocation_cuts_off_across_nodes(
    tmp_path, rabbit
):
    cluster, shared_port = rabbit
    async with cluster_site(tmp_path, cluster, shared_port, n_devices=6) as s:
        # no data before authentication: the broker itself refuses it, the gateway never sees it
        raw = await raw_device_client(s.port_of(1), s.devices[0], on_message=lambda t, p: None)
        listener, got = await s.listener("gw-a", node=2)
        raw.publish(topics.data("gw-a", s.devices[0].device_id.hex(), "telemetry"), b"forged", qos=0)
        assert await _closed(raw), "a device published data without a session and stayed connected"
        assert s.refusals("no_session") >= 1
        # nor another device's topics
        raw = await raw_device_client(s.port_of(2), s.devices[1], on_message=lambda t, p: None)
        raw.publish(topics.handshake_up("gw-a", s.devices[2].device_id.hex()), b"x" * 20, qos=0)
        assert await _closed(raw)
        assert s.refusals("not_own_topic") >= 1
        # a wrong password, and a device's id taken as another's client id, are refused at login
        with pytest.raises(MqttConnectError):
            await MqttClient.connect(
                "127.0.0.1",
                s.port_of(0),
                client_id=s.devices[3].device_id.hex(),
                username=s.devices[3].device_id.hex(),
                password="not-the-password-0000",
                on_message=lambda t, p: None,
                timeout=5,
            )
        with pytest.raises(MqttConnectError):
            await MqttClient.connect(
                "127.0.0.1",
                s.port_of(0),
                client_id=s.devices[4].device_id.hex(),
                username=s.devices[3].device_id.hex(),
                password=s.devices[3].broker_password(0),
                on_message=lambda t, p: None,
                timeout=5,
            )
        assert s.refusals("bad_password") >= 1 and s.refusals("client_id") >= 1
        # six devices spread over three nodes, sessions with both gateways
        placement = {i: ("gw-a" if i % 2 == 0 else "gw-b", i % 3) for i in range(6)}
        devs = await _authenticated(s, placement)
        for d in devs.values():
            d.send_data("telemetry", d.hex.encode())  # type: ignore[attr-defined]
        assert await eventually(lambda: len(got) == 6, 10), got
        assert sum(gw.metrics.get("data_dropped", "no_session") for gw in s.gateways.values()) == 0
        # revocation of device 5 (node 2, session with gw-b; the gateways sit on nodes 0 and 1)
        victim = devs[5]
        await s.actors["owner"].revoke(victim.device_id)  # type: ignore[attr-defined]
        assert await _closed(victim.client), "the revoked device stayed connected"  # type: ignore[attr-defined]
        # it never gets back in; a try may also fail before the login question (a node still
        # tearing down the old connection), so try until the gateways have said "unknown device"
        errors = []
        for _ in range(10):
            with pytest.raises(MqttError) as refused:  # refused, or no answer: never a CONNACK 0
                await victim.connect(timeout=5)  # type: ignore[attr-defined]
            errors.append(repr(refused.value))
            if s.refusals("unknown_device") >= 1:
                break
            await asyncio.sleep(0.5)
        assert s.refusals("unknown_device") >= 1, errors
        # the others were not disturbed
        got.clear()
        for i, d in devs.items():
            if i != 5:
                d.send_data("status", b"ok")  # type: ignore[attr-defined]
        assert await eventually(lambda: len(got) == 5, 10), got
        await listener.close()
        for i, d in devs.items():
            if i != 5:
                await d.close()  # type: ignore[attr-defined]


async def test_a_gateway_dies_and_the_other_keeps_authorizing(tmp_path, rabbit):
    cluster, shared_port = rabbit
    async with cluster_site(tmp_path, cluster, shared_port, n_devices=4) as s:
        devs = await _authenticated(s, {i: ("gw-a", i % 3) for i in range(4)})
        await crash_gateway(s, "gw-a")
        # gw-a's devices notice it stopped answering and turn to gw-b: new logins, new topics, data;
        # every question now reaches gw-b alone through the shared endpoint port
        for d in devs.values():
            await d.close()  # type: ignore[attr-defined]
        listener, got = await s.listener("gw-b", node=1)
        moved = await _authenticated(s, {i: ("gw-b", (i + 1) % 3) for i in range(4)})
        for d in moved.values():
            d.send_data("telemetry", d.hex.encode())  # type: ignore[attr-defined]
        assert await eventually(lambda: len(got) == 4, 10), got
        assert s.gateways["gw-b"].metrics.get("authz_allowed", "user") >= 4
        await listener.close()
        for d in moved.values():
            await d.close()  # type: ignore[attr-defined]


async def _refused_subscription(client: MqttClient, topic: str) -> bool:
    """RabbitMQ answers a refused subscription by closing the connection (or a 0x80 in the SUBACK)."""
    try:
        granted = await client.subscribe([(topic, 1)], timeout=5)
    except MqttError:
        return True
    return granted == [0x80] or await _closed(client, 5)


async def test_gateway_accounts_are_broker_users_held_to_their_own_topics(tmp_path, rabbit):
    cluster, shared_port = rabbit
    async with cluster_site(tmp_path, cluster, shared_port, n_devices=2) as s:
        # each gateway wrote its accounts into the broker, with the endpoint's rights as permissions
        for user in ("gateway-gw-a", "gateway-gw-a.1", "gateway-gw-b"):
            want = gateway_account_permissions(user)
            (perm,) = cluster.management(f"/topic-permissions/%2F/{user}")
            assert perm["exchange"] == "amq.topic"
            assert (perm["write"], perm["read"]) == (want.topic_write, want.topic_read)
        # the broker decides a gateway account's login and topics itself: the endpoint is not asked
        def asked() -> int:
            return sum(
                gw.metrics.get("authz_allowed", q) for gw in s.gateways.values() for q in ("user", "topic")
            )

        before = asked()
        listener, got = await s.listener("gw-a", node=2)
        assert asked() == before
        # a device's questions still reach the endpoint; its verified data reach the application
        dev = s.sim(0, gateway_id="gw-a", node=1)
        await dev.connect()
        assert isinstance(await dev.authenticate(timeout=10), events.Authenticated)
        dev.send_data("telemetry", b"via-internal-accounts")
        assert await eventually(lambda: len(got) == 1, 10), got
        assert asked() > before
        # outside its topics a gateway account is refused by the broker: a device's data topic
        listener.publish(topics.data("gw-a", dev.hex, "telemetry"), b"forged", qos=0)
        assert await _closed(listener), "a gateway account published on a device's data topic"
        # another gateway's handshakes, and everything
        for topic in (topics.topic_filter(topics.HANDSHAKE, "gw-b", topics.ANY, topics.UP), "#"):
            other, _ = await s.listener("gw-a", node=0, topic=topics.every(topics.VERIFIED))
            assert await _refused_subscription(other, topic), topic
            await other.close()
        # a wrong password: refused by the broker's account and by the endpoint alike
        with pytest.raises(MqttConnectError):
            await MqttClient.connect(
                "127.0.0.1",
                s.port_of(0),
                client_id="gateway-gw-a.1",
                username="gateway-gw-a.1",
                password="not-the-password-000000",
                on_message=lambda t, p: None,
                timeout=5,
            )
        await dev.close()


async def test_a_session_end_closes_the_connection_through_the_management_api(tmp_path, rabbit):
    cluster, shared_port = rabbit
    async with cluster_site(tmp_path, cluster, shared_port, n_devices=2) as s:
        listener, got = await s.listener("gw-a", node=0)
        dev = s.sim(0, gateway_id="gw-a", node=2)  # the gateway sits on node 0, the device on node 2
        await dev.connect()
        assert isinstance(await dev.authenticate(timeout=10), events.Authenticated)
        dev.send_data("telemetry", b"before")
        assert await eventually(lambda: len(got) == 1, 10), got
        gw = s.gateways["gw-a"]
        closed_before = s.enforcer("gw-a").closed_connections
        gw.traffic.drop_session(dev.device_id, "expired")  # as a session's end of life does
        assert await _closed(dev.client), "the broker kept a connection whose session ended"
        assert s.enforcer("gw-a").closed_connections == closed_before + 1
        # still enrolled: it logs in again, but its data topics wait for a new session
        await dev.connect()
        dev.replay(topics.data("gw-a", dev.hex, "telemetry"), b"\x00" * 48)
        assert await _closed(dev.client), "data published without a session were accepted"
        assert s.refusals("no_session") >= 1
        await dev.connect()
        assert isinstance(await dev.authenticate(timeout=10), events.Authenticated)
        dev.send_data("telemetry", b"after")
        assert await eventually(lambda: [p for _, p in got] == [b"before", b"after"], 10), got
        await listener.close()
        await dev.close()


async def test_a_node_dies_mid_fleet_and_its_devices_reconnect_elsewhere_and_reauthenticate(tmp_path, rabbit):
    cluster, shared_port = rabbit
    async with cluster_site(tmp_path, cluster, shared_port, n_devices=6) as s:
        placement = {i: ("gw-a" if i % 2 == 0 else "gw-b", i % 3) for i in range(6)}
        devs = await _authenticated(s, placement)
        listener, got = await s.listener("gw-a", node=0)
        on_node2 = [i for i in devs if placement[i][1] == 2]
        cluster.kill_node(2)
        for i in on_node2:
            assert await _closed(devs[i].client), i  # type: ignore[attr-defined]
        # the firmware's next broker in its list: node 0; its session died with the connection
        for i in on_node2:
            d = devs[i]
            d.port = s.port_of(0)  # type: ignore[attr-defined]
            for _ in range(50):
                try:
                    await d.connect(timeout=5)  # type: ignore[attr-defined]
                    break
                except MqttError:  # refused, or dropped while the cluster notices the dead node
                    await d.close()  # type: ignore[attr-defined]
                    await asyncio.sleep(0.2)
            assert isinstance(await d.authenticate(timeout=10), events.Authenticated), i  # type: ignore[attr-defined]
        for d in devs.values():
            d.send_data("telemetry", d.hex.encode())  # type: ignore[attr-defined]
        assert await eventually(lambda: len(got) == 6, 15), got
        assert sorted(p for _, p in got) == sorted(d.hex.encode() for d in devs.values())  # type: ignore[attr-defined]
        await listener.close()
        for d in devs.values():
            await d.close()  # type: ignore[attr-defined]
