"""Loads the committed contract artifacts (ABI + bytecode) shipped as package data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .errors import ArtifactError

CONTRACT_NAMES = ("DeviceRegistry", "AuthenticationLog")


@dataclass(frozen=True, kw_only=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact `artifacts/<name>.json`, as `make contracts` wrote it."""
    try:
        text = resources.files(__package__).joinpath("artifacts", f"{name}.json").read_text("utf-8")
        raw = json.loads(text)
        return Artifact(
            name=name, abi=raw["abi"], bytecode=raw["bytecode"], deployed_bytecode=raw["deployedBytecode"]
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(
            f"contract artifact {name!r} is missing or malformed ({type(exc).__name__})"
        ) from exc
