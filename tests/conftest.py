"""Shared test helpers.

In CI (``CI=true``) a missing real component (Mosquitto, an EVM node, MicroPython) is a failure,
never a skip; on a developer machine the test is skipped with the reason.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Timing belongs in bench/, not in tests: no hypothesis deadlines (a loaded CI machine trips them).
settings.register_profile("diams", deadline=None)
settings.load_profile("diams")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a real component the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is missing", pytrace=False)
    pytest.skip(f"{what} is not available")
