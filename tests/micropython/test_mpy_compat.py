"""The core as MicroPython sees it: mpy-cross compiles every module, the .mpy files load, the
device's install set is closed under imports, and the source keeps to what MicroPython accepts.

Strategy: mpy-cross catches what its parser rejects (``match``, ``/`` parameters, ``{**d}``,
``[*a, b]``); the AST and token checks here catch what compiles but fails or differs at run time
on MicroPython (see the MicroPython rows of FACTS.md and micropython-lib's lint configuration).
"""

import ast
import io
import tokenize

import pytest

from firmware_sim.mpy import runner
from tests.conftest import require

pytestmark = pytest.mark.micropython

ALL_MODULES = tuple(sorted(p.stem for p in runner.CORE.glob("*.py")))
# Stdlib modules every MicroPython port has (``hmac`` only behind ``except ImportError``).
ALLOWED_IMPORTS = {"hashlib", "struct"}
OPTIONAL_IMPORTS = {"hmac"}


def _tree(module: str) -> ast.Module:
    return ast.parse((runner.CORE / f"{module}.py").read_text())


def test_every_core_module_compiles_and_loads(tmp_path):
    require(runner.MICROPYTHON is not None and runner.MPY_CROSS is not None, "micropython and mpy-cross")
    sizes = runner.compile_modules(tmp_path, ALL_MODULES)
    assert all(size > 0 for size in sizes.values())
    # 128K: every core module at once, the re-keying ones (rekey, x25519) included, which a board loads
    # only when re-keying; the device's own budget is tests/micropython/test_mpy_heap.py's.
    proc = runner.run("import_all.py", *ALL_MODULES, path=[tmp_path], heap="128K")
    assert proc.returncode == 0, proc.stderr
    files = runner.json_lines(proc.stdout)["files"]
    assert files == {m: str(tmp_path / "device_agent" / "core" / f"{m}.mpy") for m in ALL_MODULES}


def test_device_install_set_is_closed_under_imports():
    needed, todo = set(), ["device", "__init__"]
    while todo:
        module = todo.pop()
        if module in needed:
            continue
        needed.add(module)
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo.extend([node.module] if node.module else [a.name for a in node.names])
    assert needed <= set(runner.DEVICE_MODULES)
    assert "gateway" not in needed


def _optional(tree: ast.Module) -> set[int]:
    """Line numbers of imports inside ``try: ... except ImportError``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers):
            lines.update(n.lineno for stmt in node.body for n in ast.walk(stmt)
                         if isinstance(n, ast.Import | ast.ImportFrom))
    return lines


def _problems(source: str, name: str) -> list[str]:
    tree = ast.parse(source)
    optional = _optional(tree)
    problems = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for imported in names:
                root = (imported or "").split(".")[0]
                if root not in ALLOWED_IMPORTS and not (root in OPTIONAL_IMPORTS and node.lineno in optional):
                    problems.append(f"{where}: imports {imported}, which MicroPython lacks or may lack")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith")
              and any(isinstance(a, ast.Tuple) for a in node.args)):
            problems.append(f"{where}: .{node.func.attr}() with a tuple (not in MicroPython)")
        elif isinstance(node, ast.Match):
            problems.append(f"{where}: match statement")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and node.args.posonlyargs:
            problems.append(f"{where}: positional-only parameters")
        elif isinstance(node, ast.Dict) and None in node.keys:
            problems.append(f"{where}: {{**mapping}} display")
        elif (isinstance(node, ast.List | ast.Tuple | ast.Set) and not isinstance(node.ctx, ast.Store)
              and any(isinstance(e, ast.Starred) for e in node.elts)):
            problems.append(f"{where}: starred item in a display")
    return problems + _implicit_fstring_concat(source, name)


@pytest.mark.parametrize("module", ALL_MODULES)
def test_source_keeps_to_micropython(module):
    assert _problems((runner.CORE / f"{module}.py").read_text(), f"{module}.py") == []


def test_the_source_checks_catch_each_construct():
    bad = """\
from __future__ import annotations
import typing, dataclasses, enum, secrets
from hmac import digest
x = "a".startswith(("a", "b"))
y = f"{x}" "tail"
z = {**{}}
w = [*z, 1]
def f(a, /, b): pass
match x:
    case _: pass
try:
    import hmac
except ImportError:
    hmac = None
"""
    found = _problems(bad, "bad.py")
    lines = sorted(int(p.split(":")[1]) for p in found)
    assert lines == [1, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9], found  # line 12, the guarded import, is fine


def _implicit_fstring_concat(source: str, name: str) -> list[str]:
    """Adjacent string literals of which one is an f-string: MicroPython rejects the concatenation."""
    problems, previous = [], None
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        if tok.type == tokenize.STRING:
            is_f = "f" in tok.string.split(tok.string[-1])[0].lower()
            if previous is not None and (previous or is_f):
                problems.append(f"{name}:{tok.start[0]}: implicit concatenation with an f-string")
            previous = is_f
        else:
            previous = None
    return problems
