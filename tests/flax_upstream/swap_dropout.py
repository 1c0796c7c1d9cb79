"""A pytest plugin that puts dropoutx's Dropout modules in place of Flax's.

``tests/test_flax_upstream.py`` runs Flax's own Dropout tests in a subprocess
with ``-p swap_dropout``. The swap happens in :func:`pytest_configure`, before
Flax's test modules are collected, and only when this file is loaded as a
plugin: importing it (as the repository's doctest collection does) changes
nothing.
"""

from __future__ import annotations

from typing import Any

# The line the parent test looks for, to know that the swap really happened.
SWAPPED = "dropoutx swap: flax.linen.Dropout and flax.nnx.Dropout are dropoutx's"


def pytest_configure(config: Any) -> None:
    """Replaces ``flax.linen.Dropout`` and ``flax.nnx.Dropout`` with dropoutx's."""
    import flax.linen
    import flax.nnx

    from dropoutx import linen as dxl
    from dropoutx import nnx as dxn

    flax.linen.Dropout = dxl.Dropout  # type: ignore[misc]
    flax.nnx.Dropout = dxn.Dropout  # type: ignore[misc]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Reports the swap if it still holds at the end of the run."""
    import flax.linen
    import flax.nnx

    from dropoutx import linen as dxl
    from dropoutx import nnx as dxn

    if flax.linen.Dropout is dxl.Dropout and flax.nnx.Dropout is dxn.Dropout:
        terminalreporter.write_line(SWAPPED)
