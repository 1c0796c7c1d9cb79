"""The README's Python examples run as written.

Blocks that start with the multi-device marker run together, in order, in a
subprocess with 8 simulated CPU devices (the flag must be set before JAX
starts); the others run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
MULTI_DEVICE = "# Runs on 8 devices"
SINGLE = [block for block in BLOCKS if not block.startswith(MULTI_DEVICE)]
MULTI = [block for block in BLOCKS if block.startswith(MULTI_DEVICE)]


def test_readme_has_examples() -> None:
    assert SINGLE and MULTI


@pytest.mark.parametrize("index", range(len(SINGLE)))
def test_readme_example_runs(index: int) -> None:
    exec(compile(SINGLE[index], f"README.md block {index}", "exec"), {})


def test_readme_multi_device_examples_run() -> None:
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(MULTI)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
