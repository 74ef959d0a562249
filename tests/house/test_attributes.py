"""A class's attributes are all assigned in its ``__init__``: a reader (and mypy) sees every collaborator
there, and none appears later, half-built, in ``__aenter__`` or another method (issue 8, "typed seams").

A bare class-level annotation (``counters: CounterStore``) does not count: that is how the gateway's
parts were declared while ``__aenter__`` built them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("gateway/service.py", "gateway/traffic.py", "gateway/devices.py")


def _self_targets(node: ast.AST) -> set[str]:
    """Attributes of ``self`` assigned anywhere in ``node`` (plain, annotated, augmented, tuple targets)."""
    names: set[str] = set()
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = list(sub.targets)
        elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
            targets = [sub.target]
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets += target.elts
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                names.add(target.attr)  # self.x = ..., not self.x.y = ... (that is x's own attribute)
    return names


def late_attributes(source: str) -> list[str]:
    """``Class.method: attribute`` for each attribute first assigned outside ``__init__``."""
    late = []
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef):
            continue
        methods = [m for m in cls.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
        in_init: set[str] = set()
        for m in methods:
            if m.name == "__init__":
                in_init = _self_targets(m)
        if not any(m.name == "__init__" for m in methods):
            continue  # dataclasses and the like: their fields are their attributes
        for m in methods:
            if m.name != "__init__":
                late += [f"{cls.name}.{m.name}: {a}" for a in sorted(_self_targets(m) - in_init)]
    return late


@pytest.mark.parametrize("path", CHECKED)
def test_every_attribute_is_assigned_in_init(path: str) -> None:
    assert late_attributes((ROOT / path).read_text()) == []


def test_the_check_fails_on_an_attribute_first_assigned_in_aenter() -> None:
    source = (
        "class Gateway:\n"
        "    counters: CounterStore\n"
        "    def __init__(self, settings):\n"
        "        self.settings = settings\n"
        "    async def __aenter__(self):\n"
        "        self.counters = CounterStore(self.settings.path)\n"
        "        self.settings.path = None\n"
        "        self.settings, (self.index, *self.rest) = None, (1, 2)\n"
        "        return self\n"
    )
    assert late_attributes(source) == ["Gateway.__aenter__: counters", "Gateway.__aenter__: index",
                                     "Gateway.__aenter__: rest"]


@pytest.mark.parametrize("path", ["gateway/service.py", "gateway/preflight.py", "gateway/ledger_link.py"])
def test_the_gateway_s_ledger_seams_are_typed(path: str) -> None:
    """The ledger, its actor, the signer and the broker changes are named types here, never ``Any``."""
    tree = ast.parse((ROOT / path).read_text())
    uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "Any"]
    assert uses == [], f"{path}: Any at lines {uses}"
