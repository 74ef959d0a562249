"""docs/SECURITY.md cites tests as evidence: every cited file and test function must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_cited_test_exists() -> None:
    text = (REPO / "docs" / "SECURITY.md").read_text()
    citations = CITATION.findall(text)
    assert len(citations) > 20
    missing = []
    for file, name in citations:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif name and name not in _test_names(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/SECURITY.md cites tests that do not exist: {missing}"


def test_every_etsi_provision_the_issue_names_is_mapped() -> None:
    text = (REPO / "docs" / "SECURITY.md").read_text()
    for provision in ("5.1", "5.3", "5.4", "5.5", "5.6", "5.9", "5.13"):
        assert re.search(rf"^\| {re.escape(provision)} ", text, re.M), provision
