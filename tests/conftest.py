"""Shared test configuration.

Hypothesis runs derandomised so that the suite is reproducible in CI; the
statistical tests use fixed keys and state their own false-failure bounds.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import pytest
from hypothesis import settings

settings.register_profile("dropoutx", derandomize=True, deadline=None, max_examples=40)
settings.load_profile("dropoutx")


@pytest.fixture
def strict_promotion() -> Iterator[None]:
    """Runs a test with JAX's strict dtype promotion, so no silent upcasts."""
    with jax.numpy_dtype_promotion("strict"):
        yield
