"""The one topic module: build and parse tables, the identifier rules, and the guards that keep it the
only place a topic is written (no topic literal in code elsewhere; every topic in docs parses)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.core import topics as t

ROOT = Path(__file__).resolve().parents[2]
D = "0123456789abcdef"

BUILT = [
    (t.handshake_up("gw-a", D), f"{t.PREFIX}/hs/gw-a/{D}/up", ("hs", "gw-a", D, "up")),
    (t.handshake_down("gw-a", D), f"{t.PREFIX}/hs/gw-a/{D}/down", ("hs", "gw-a", D, "down")),
    (t.data("g1", D, "temp_2"), f"{t.PREFIX}/d/g1/{D}/temp_2", ("d", "g1", D, "temp_2")),
    (t.command("g1", D, "reauth"), f"{t.PREFIX}/c/g1/{D}/reauth", ("c", "g1", D, "reauth")),
    (t.verified("g1", D, "Temp-1"), f"{t.PREFIX}/v/g1/{D}/Temp-1", ("v", "g1", D, "Temp-1")),
]


@pytest.mark.parametrize(("built", "text", "parsed"), BUILT)
def test_builders_and_parse_agree(built: str, text: str, parsed: tuple[str, ...]) -> None:
    assert built == text
    assert t.parse(built) == parsed
    assert t.parse(built.encode()) == parsed


def test_filters_and_acl_forms() -> None:
    assert t.topic_filter(t.HANDSHAKE, "gw-a", t.ANY, t.UP) == f"{t.PREFIX}/hs/gw-a/+/up"
    assert t.topic_filter(t.DATA, "gw-a") == f"{t.PREFIX}/d/gw-a/+/+"
    assert t.topic_filter(t.COMMAND, t.ANY, D) == f"{t.PREFIX}/c/+/{D}/+"
    assert t.topic_filter(t.DATA, t.ANY, t.USER) == f"{t.PREFIX}/d/+/%u/+"
    assert t.every(t.VERIFIED) == f"{t.PREFIX}/v/#"
    assert t.every() == f"{t.PREFIX}/#"
    with pytest.raises(ValueError):
        t.topic_filter("x")
    with pytest.raises(ValueError):
        t.every("x")
    with pytest.raises(ValueError, match="handshake direction"):
        t.topic_filter(t.HANDSHAKE, "gw-a", t.ANY, t.ANY)
    # re-keying at transfer (PROTOCOL.md 2.3): the handshake's shape, its own kind
    assert t.rekey_down("gw-a", D) == f"{t.PREFIX}/rk/gw-a/{D}/down"
    assert t.parse(t.rekey_up("gw-a", D)) == (t.REKEY, "gw-a", D, t.UP)
    assert t.topic_filter(t.REKEY, "gw-a", t.USER, t.UP) == f"{t.PREFIX}/rk/gw-a/%u/up"
    assert t.parse(f"{t.PREFIX}/rk/gw-a/{D}/telemetry") is None
    with pytest.raises(ValueError, match="re-key direction"):
        t.topic_filter(t.REKEY, "gw-a", t.ANY, t.ANY)
    # a wildcard is never accepted where a concrete topic is built
    wild = (lambda: t.data(t.ANY, D, "x"), lambda: t.data("g", t.USER, "x"), lambda: t.data("g", D, "#"))
    for call in wild:
        with pytest.raises(ValueError):
            call()


BAD_DEVICE = ["", D.upper(), D[:12], D + "0", "zzzzzzzzzzzzzzzz", "01234567 9abcdef", "0123456789abcde+",
              "0123456789abcde#", "0123456789abcde/", D[:15] + "\n", None, 7, D.encode()]
BAD_GATEWAY = ["", "GW", "g" * 33, "gw/a", "gw+", "gw#", "gw a", "gw\n", "$sys", "gw_a", "gw.a", None]
BAD_NAME = ["", "s" * 65, "a/b", "a+", "a#", "a.b", "température", "a b", "a\n", "$x", None]


@pytest.mark.parametrize("bad", BAD_DEVICE)
def test_bad_device_ids_are_refused(bad: object) -> None:
    assert not t.is_device_id(bad)
    with pytest.raises(ValueError, match="device id"):
        t.data("gw", bad, "x")


@pytest.mark.parametrize("bad", BAD_GATEWAY)
def test_bad_gateway_ids_are_refused(bad: object) -> None:
    assert not t.is_gateway_id(bad)
    with pytest.raises(ValueError, match="gateway id"):
        t.handshake_up(bad, D)


@pytest.mark.parametrize("bad", BAD_NAME)
def test_one_stream_name_rule(bad: object) -> None:
    assert not t.is_name(bad)
    with pytest.raises(ValueError, match="stream name"):
        t.data("gw", D, bad)
    with pytest.raises(ValueError, match="command name"):
        t.command("gw", D, bad)


def _level(topic: str, i: int, value: str) -> str:
    parts = topic.split("/")
    parts[i] = value
    return "/".join(parts)


GOOD = t.data("gw-a", D, "telemetry")
NOT_TOPICS = [
    "", GOOD + "/extra", GOOD.rsplit("/", 1)[0], GOOD.rsplit("/", 1)[0] + "/", _level(GOOD, 1, "v2"),
    _level(GOOD, 0, "x"), _level(GOOD, 2, "x"), _level(GOOD, 3, "GW"), _level(GOOD, 4, D.upper()),
    _level(GOOD, 5, "a.b"), _level(GOOD, 5, "+"), _level(GOOD, 3, "+"),
    _level(t.handshake_up("g", D), 5, "sideways"),
    t.topic_filter(t.DATA, "gw-a"), t.every(),
]


@pytest.mark.parametrize("topic", NOT_TOPICS)
def test_parse_refuses_everything_else(topic: str) -> None:
    assert t.parse(topic) is None
    assert t.parse(topic.encode()) is None


def test_parse_refuses_undecodable_bytes() -> None:
    assert t.parse(GOOD.encode().replace(D.encode(), b"\xff\xfe" * 8)) is None
    assert t.parse(None) is None


@given(st.text(max_size=80) | st.binary(max_size=80))
def test_parse_never_crashes_and_what_it_accepts_rebuilds(topic: str | bytes) -> None:
    parsed = t.parse(topic)
    if parsed is not None:
        kind, gateway, device, last = parsed
        rebuilt = t.topic_filter(kind, gateway, device, last)
        assert rebuilt == (topic if isinstance(topic, str) else topic.decode())


# -- the guards ----------------------------------------------------------------------------------

# A topic written by hand: the prefix with a topic kind or "#", a kind level followed by a wildcard,
# a placeholder or an f-string field, or a handshake direction at the end of a piece.
_TOPIC_LITERAL = re.compile(r"diams/v1/(hs|d|c|v|rk|#)(/|$)|(^|/)(hs|d|c|v|rk)/(\+|\{|%|<|$)|/(up|down)$")
_KEY_LABEL = re.compile(r"^diams/v1/[a-z-]+$")  # HKDF/HMAC labels ("diams/v1/up" is K_up's), not topics
_SCANNED = ("device_agent", "gateway", "ledger_bridge", "firmware_sim", "bench", "tests", "scripts")
_EXEMPT = {Path("device_agent/core/topics.py"), Path("tests/core/test_topics.py")}


def _string_constants(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            out.append((node.lineno, text))
    return out


def topic_literals(root: Path = ROOT) -> list[str]:
    found = []
    for top in _SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            if rel in _EXEMPT or "node_modules" in rel.parts or "vendor" in rel.parts:
                continue
            for lineno, text in _string_constants(path):
                for piece in text.splitlines() or [text]:
                    for word in piece.replace("`", " ").split():
                        if _KEY_LABEL.match(word):
                            continue
                        if _TOPIC_LITERAL.search(word):
                            found.append(f"{rel}:{lineno}: {word}")
    return found


def test_no_topic_literal_outside_the_topic_module() -> None:
    assert topic_literals() == []


def test_the_literal_guard_can_fail(tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "x.py").write_text(
        'A = f"diams/v1/hs/{g}/{d}/up"\nB = "diams/v1/up"\nC = f"{p}/c/{g}/x"\n'
    )
    assert [f.split(": ")[1] for f in topic_literals(tmp_path)] == ["diams/v1/hs/", "/up", "/c/"]


_DOC_TOPIC = re.compile(r"diams/v1/(?:hs|d|c|v)(?![\w-])(?:/[^\s`|,;)]*)?")
_PLACEHOLDERS = {
    "G": "gw-a", "gateway": "gw-a", "gateway_id": "gw-a", "D": D, "device": D, "device_id": D, "id": D,
    "stream": "telemetry", "name": "config", "command": "config",
}


def doc_topics() -> list[tuple[str, str]]:
    out = []
    for doc in sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]):
        for match in _DOC_TOPIC.finditer(doc.read_text()):
            out.append((doc.name, match.group(0).rstrip(".")))
    return out


def _concrete(written: str) -> str:
    return re.sub(r"<([a-z_A-Z]+)>", lambda m: _PLACEHOLDERS[m.group(1)], written)


@pytest.mark.parametrize(("doc", "written"), doc_topics())
def test_every_topic_in_docs_parses(doc: str, written: str) -> None:
    topic = _concrete(written)
    if topic.endswith("/#"):
        assert topic == t.every(topic.split("/")[2]), (doc, written)
        return
    parts = topic.split("/")
    assert len(parts) == 6, (doc, written)
    filled = [parts[0], parts[1], parts[2], *(
        {3: "gw-a", 4: D, 5: "telemetry"}[i] if p == "+" else p for i, p in enumerate(parts[3:], 3))]
    assert t.parse("/".join(filled)) is not None, (doc, written)


def test_docs_mention_every_topic_kind() -> None:
    kinds = {w.split("/")[2] for _, w in doc_topics()}
    assert kinds == {t.HANDSHAKE, t.DATA, t.COMMAND, t.VERIFIED}
