"""Assertions shared by the test modules."""

from __future__ import annotations

import re
from typing import Any

import pytest


def assert_near(
    value: float, expected: float, standard_error: float, what: str, *, sigmas: float
) -> None:
    """``value`` lies within ``sigmas`` standard errors of ``expected``."""
    assert abs(value - expected) <= sigmas * standard_error, (
        f"{what}: {value} vs {expected} (+- {sigmas} x {standard_error})"
    )


def raises(error: type[Exception], *fragments: str) -> Any:
    """``pytest.raises`` requiring every fragment to appear in the message."""
    pattern = "".join(f"(?=[\\s\\S]*{re.escape(fragment)})" for fragment in fragments)
    return pytest.raises(error, match=pattern)


def assert_fusion_makes(hlo: str, dtype: str, shape: tuple[int, ...]) -> None:
    """Some fusion of the compiled program ``hlo`` outputs a ``dtype[shape]`` array."""
    dims = ",".join(map(str, shape))
    assert re.search(rf"= {dtype}\[{dims}\]\S* fusion\(", hlo), f"no fusion makes {dtype}[{dims}]"
