"""Shared test helpers.

In CI (``CI=true``) a missing real component (Mosquitto, an EVM node, MicroPython) is a failure,
never a skip; on a developer machine the test is skipped with the reason.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a real component the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is missing", pytrace=False)
    pytest.skip(f"{what} is not available")
