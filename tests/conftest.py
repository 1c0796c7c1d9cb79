"""Shared test configuration.

Hypothesis runs derandomised so that the suite is reproducible in CI; the
statistical tests use fixed keys and state their own false-failure bounds.

Most of the suite's time is XLA compiling small programs, and most of that is
LLVM optimising the machine code. The tests compile at LLVM's ``-O1``
(``--xla_backend_optimization_level=1``) instead of the default ``-O2``, as
``cargo test`` builds without optimisation: XLA's HLO passes (fusion, buffer
assignment, the programs the HLO and memory tests read) are the same, the
integer hash is exact at any level, and the suite takes about a quarter less
time. The benchmarks and the README's main command run at the default. The
flag goes into ``XLA_FLAGS`` before JAX starts a backend, so the notebooks'
kernels and the subprocesses of ``simulated_devices`` inherit it; a level set
in ``XLA_FLAGS`` already is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

_TEST_OPTIMIZATION = "--xla_backend_optimization_level=1"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_TEST_OPTIMIZATION}".strip()

import jax  # noqa: E402  (after XLA_FLAGS is set)

settings.register_profile("dropoutx", derandomize=True, deadline=None, max_examples=40)
settings.load_profile("dropoutx")


@pytest.fixture
def strict_promotion() -> Iterator[None]:
    """Runs a test with JAX's strict dtype promotion, so no silent upcasts."""
    with jax.numpy_dtype_promotion("strict"):
        yield
