"""Shared test helpers: where the read-only real data sets live, and skipping tests that need them."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI must not fail on a new random draw: derandomize there; local runs keep exploring.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The checkout sits beside `shared/` (e.g. /work/main and /work/shared/data); it may be absent elsewhere.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real data sets folder; skips the test with a visible reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA
