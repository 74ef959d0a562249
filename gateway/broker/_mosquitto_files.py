"""Mosquitto's password and ACL files: rendering from a snapshot, and atomic replacement.

Strategy: the files are always rendered whole from the enforcer's in-memory table, never edited in
place, so a failed write or a lost reload is repaired by the next one. Per-device rights come from
``pattern`` lines (``%u`` is substituted in acl_file patterns, unlike in dynamic security), so an
enrolled device costs one password line and no ACL line. ``user`` blocks are expensive in mosquitto
2.0: each topic line and each connected client on reload searches the list of users linearly, so N
blocks cost O(N^2) per reload (measured: 10,000 blocks → ~0.5 s with no client connected, ~0.8 s with
10,000 connected; 1,000 blocks → ~0.05-0.1 s). Gateways and applications always get ``user`` blocks;
devices get one only in the ``per_device`` rights mode, while GRANTED. An application's block starts
with ``topic deny`` lines: mosquitto checks a user's own lines before the patterns and a matching
denial ends the check, so the ``pattern`` lines (which apply to every user) give it nothing.
Usernames are validated identifiers, so no line can be injected.

The broker must be able to read the files after it dropped root (user ``mosquitto``): each file is
created with ``mode`` and, when given, ``group``, before it is renamed over the old one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ._canary import CANARY_USERNAME, VERSION_TOPIC
from ._names import (
    ANY,
    COMMAND,
    DATA,
    DOWN,
    HANDSHAKE,
    REKEY,
    UP,
    USER,
    VERIFIED,
    application_username,
    every,
    gateway_username,
    topic_filter,
)


# Applies to every user: a device's own handshake topics, with each registered gateway (fail-over needs
# that; the gateway level is never a `+`, so no device can park messages under a made-up gateway id),
# and its own re-key topics (docs/PROTOCOL.md 2.3), whose other end is that gateway's account (the new
# owner's tool runs the exchange with it).
def pre_auth_patterns(gateway_id: str) -> tuple[str, ...]:
    return (
        f"pattern write {topic_filter(HANDSHAKE, gateway_id, USER, UP)}",
        f"pattern read {topic_filter(HANDSHAKE, gateway_id, USER, DOWN)}",
        f"pattern write {topic_filter(REKEY, gateway_id, USER, UP)}",
        f"pattern read {topic_filter(REKEY, gateway_id, USER, DOWN)}",
    )


# rights="patterns": every enrolled device may also use its own data and command topics.
def data_patterns(gateway_id: str) -> tuple[str, str]:
    return (
        f"pattern write {topic_filter(DATA, gateway_id, USER)}",
        f"pattern read {topic_filter(COMMAND, gateway_id, USER)}",
    )


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    password_hash: str
    streams: tuple[str, ...] | None  # None: ENROLLED only; a tuple: GRANTED with these streams
    rekey_gateway: str | None = None  # REKEYING: its re-key topics with this gateway, nothing else


def rekey_only_block(device_id: str, rekey_gateway: str, gateway_ids: Iterable[str]) -> list[str]:
    """A REKEYING device's ``user`` block: the denials come first (mosquitto checks them before anything
    else, and before the ``pattern`` lines, which apply to every user): no handshake, data, command or
    verified topic, no re-key topic of another gateway; then its two re-key topics with ``rekey_gateway``."""
    lines = [f"user {device_id}"]
    lines.extend(f"topic deny {every(kind)}" for kind in (HANDSHAKE, DATA, COMMAND, VERIFIED))
    lines.extend(
        f"topic deny {topic_filter(REKEY, gid, device_id, leaf)}"
        for gid in gateway_ids
        if gid != rekey_gateway
        for leaf in (UP, DOWN)
    )
    lines += [
        f"topic write {topic_filter(REKEY, rekey_gateway, device_id, UP)}",
        f"topic read {topic_filter(REKEY, rekey_gateway, device_id, DOWN)}",
        "",
    ]
    return lines


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    password_hash: str
    connections: int


def render_password_file(
    gateways: Iterable[tuple[str, GatewayRecord]],
    devices: Iterable[tuple[str, DeviceRecord]],
    extra: Iterable[tuple[str, str]] = (),
    *,
    applications: Iterable[tuple[str, str]] = (),
) -> str:
    lines = [f"{username}:{password_hash}" for username, password_hash in extra]
    lines.extend(f"{application_username(name)}:{password_hash}" for name, password_hash in applications)
    for gateway_id, gw in gateways:
        lines.extend(f"{gateway_username(gateway_id, n)}:{gw.password_hash}" for n in range(gw.connections))
    lines.extend(f"{device_id}:{record.password_hash}" for device_id, record in devices)
    lines.append("")
    return "\n".join(lines)


def render_acl_file(
    gateways: Iterable[tuple[str, GatewayRecord]],
    devices: Iterable[tuple[str, DeviceRecord]],
    *,
    per_device: bool,
    applications: Iterable[str] = (),
) -> str:
    gateways = list(gateways)
    lines = ["# Written by diams gateway.broker: do not edit, it is rewritten whole."]
    for gateway_id, _ in gateways:
        lines.extend(pre_auth_patterns(gateway_id))
        if not per_device:
            lines.extend(data_patterns(gateway_id))
    lines.append("")
    for gateway_id, gw in gateways:
        for n in range(gw.connections):
            lines += [
                f"user {gateway_username(gateway_id, n)}",
                f"topic read {topic_filter(HANDSHAKE, gateway_id, ANY, UP)}",
                f"topic write {topic_filter(HANDSHAKE, gateway_id, ANY, DOWN)}",
                f"topic read {topic_filter(DATA, gateway_id)}",
                f"topic read {every(VERIFIED)}",
                f"topic write {topic_filter(VERIFIED, gateway_id)}",
                f"topic write {topic_filter(COMMAND, gateway_id)}",
                f"topic read {topic_filter(REKEY, gateway_id, ANY, UP)}",
                f"topic write {topic_filter(REKEY, gateway_id, ANY, DOWN)}",
                "",
            ]
    for device_id, record in devices:
        if record.rekey_gateway is not None:
            lines.extend(rekey_only_block(device_id, record.rekey_gateway, (gid for gid, _ in gateways)))
            continue
        if not per_device or record.streams is None:
            continue
        lines.append(f"user {device_id}")
        for gateway_id, _ in gateways:
            data = (topic_filter(DATA, gateway_id, device_id, stream) for stream in record.streams)
            lines.extend(f"topic write {topic}" for topic in data)
            lines.append(f"topic read {topic_filter(COMMAND, gateway_id, device_id)}")
        lines.append("")
    for name in applications:
        # read-only: the denials come first and override the `pattern` lines, which apply to every user
        lines.append(f"user {application_username(name)}")
        lines.extend(f"topic deny {every(kind)}" for kind in (HANDSHAKE, REKEY, DATA, COMMAND))
        lines += [f"topic read {every(VERIFIED)}", ""]
    # last: the reload canary reads the broker's version (checked at every reload: see _version)
    lines += [f"user {CANARY_USERNAME}", f"topic read {VERSION_TOPIC}", ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str, *, mode: int, group: str | None, durable: bool = False) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new file, never a mix.

    ``durable`` adds the fsyncs that make the new file survive a power cut (tens of ms on slow disks);
    the enforcer leaves it off because it rewrites both files whole from its table at every start.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as tmp:
            os.fchmod(tmp.fileno(), mode)
            if group is not None:
                shutil.chown(tmp_name, group=group)
            tmp.write(text)
            tmp.flush()
            if durable:
                os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
