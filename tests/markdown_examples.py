"""Run the Python examples of a markdown page (the README, the docs pages).

A page's examples are its fenced ```` ```python ```` blocks. Blocks that start
with the multi-device marker run together, in order, in a subprocess with 8
simulated CPU devices (the flag must be set before JAX starts); every other
block runs on its own, in this process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import simulated_devices

MULTI_DEVICE = "# Runs on 8 devices"


def python_blocks(path: Path) -> list[str]:
    """The ```` ```python ```` blocks of the markdown file at ``path``, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def split_by_devices(blocks: list[str]) -> tuple[list[str], list[str]]:
    """``(single, multi)``: the blocks for one device and those for 8 devices."""
    single = [block for block in blocks if not block.startswith(MULTI_DEVICE)]
    multi = [block for block in blocks if block.startswith(MULTI_DEVICE)]
    return single, multi


def run_block(block: str, name: str) -> None:
    """Executes one block in a fresh namespace; ``name`` appears in tracebacks."""
    exec(compile(block, name, "exec"), {})


def run_multi_device(blocks: list[str]) -> None:
    """Executes ``blocks`` as one script on 8 simulated CPU devices; fails on an error."""
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        env=simulated_devices.environment(devices=8),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
