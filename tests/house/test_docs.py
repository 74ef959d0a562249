"""Docs that cannot drift silently: every ``diams-*`` command line quoted in README.md and docs/ is
parsed by the real argparse parser of that command (an option renamed in the code fails here)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from device_agent.agent.cli import build_parser as agent
    from firmware_sim.cli import _parser as sim
    from gateway.cli import build_parser as gateway
    from ledger_bridge.cli import build_parser as ledger

    return {"diams-gateway": gateway, "diams-agent": agent, "diams-ledger": ledger, "diams-sim": sim}


# a command at the start of a line, after an optional prompt, sudo, or environment assignments
_COMMAND = re.compile(
    r"^\s*(?:\$\s+)?(?:sudo\s+(?:-u\s+\S+\s+)?)?(?:[A-Z_]+=\S*\s+)*(diams-(?:gateway|agent|ledger|sim))(\s.*|)$"
)


def _logical_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, from a code block): fenced code lines (continuations joined) and inline
    code spans."""
    in_block, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line, True
            pending = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span, False


def commands() -> Iterator[tuple[str, str, list[str], bool]]:
    for doc in DOCS:
        for number, line, full in _logical_lines(doc.read_text()):
            match = _COMMAND.match(line)
            if match is None or any(c in line for c in "─│┌└▶◀→"):
                continue  # not a command, or a diagram
            rest = match.group(2).split(" #", 1)[0]  # a trailing shell comment
            rest = re.split(r"\s(?:&&|\|\||;|\|)\s", rest, maxsplit=1)[0]
            if "..." in rest or "\u2026" in rest:
                continue  # elided on purpose ("diams-ledger ... --keystore x.json activate")
            rest = re.sub(r"<[^>]*>", "X", rest)  # a placeholder is one word
            rest = rest.replace("[", " ").replace("]", " ")  # optional parts written [--x y]
            argv = shlex.split(rest)
            if argv:
                yield f"{doc.name}:{number}", match.group(1), argv, full


CASES = list(commands())


def test_the_docs_quote_commands_of_every_cli():
    assert {prog for _, prog, _, _ in CASES} == set(_parsers()), "the extractor lost a CLI"
    assert sum(full for *_, full in CASES) >= 10


def _relax(parser: argparse.ArgumentParser) -> None:
    """Nothing required (prose names a subcommand or an option, not a whole command line); an unknown
    subcommand or option still fails."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relax(sub)
        elif action.option_strings or action.nargs in ("+", None):
            action.required = False
            if action.nargs == "+":
                action.nargs = "*"
        if not action.option_strings and action.nargs is None and not isinstance(
            action, argparse._SubParsersAction
        ):
            action.nargs = "?"


@pytest.mark.parametrize(
    ("where", "prog", "argv", "full"), CASES, ids=[f"{w} {p}" for w, p, _, _ in CASES]
)
def test_every_documented_command_line_parses(where, prog, argv, full):
    """A command in a code block parses whole; one named in prose (`diams-agent run`, `diams-sim
    --site`) must name real subcommands and options (their values may be left out)."""
    parser = _parsers()[prog]()
    if not full:
        _relax(parser)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code in (0, None):  # --help exits 0
                return
            if not full and "expected one argument" in err.getvalue():
                return  # an option named in prose without its value
            pytest.fail(f"{where}: `{prog} {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize(
    ("prog", "argv"),
    [("diams-gateway", ["run", "--konfig", "x.toml"]), ("diams-sim", ["--sight"]), ("diams-agent", ["rn"])],
)
def test_a_wrong_option_or_subcommand_is_caught(prog, argv, full):
    with pytest.raises(pytest.fail.Exception):
        test_every_documented_command_line_parses("here", prog, argv, full)
