"""Loads the vector files shared by the CPython and MicroPython runs."""

import json
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict:
    return json.loads((DIR / name).read_text())
