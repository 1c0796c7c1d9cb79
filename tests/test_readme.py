"""The README's Python examples run as written (see ``markdown_examples``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_examples import python_blocks, run_block, run_multi_device, split_by_devices

README = Path(__file__).resolve().parent.parent / "README.md"
SINGLE, MULTI = split_by_devices(python_blocks(README))


def test_readme_has_examples() -> None:
    assert SINGLE


@pytest.mark.parametrize("index", range(len(SINGLE)))
def test_readme_example_runs(index: int) -> None:
    run_block(SINGLE[index], f"README.md block {index}")


@pytest.mark.skipif(not MULTI, reason="the README has no multi-device example")
def test_readme_multi_device_examples_run() -> None:
    run_multi_device(MULTI)
