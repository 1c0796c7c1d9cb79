"""Every notebook in ``notebooks/`` runs top to bottom without an error.

Each notebook is executed afresh in a ``python3`` Jupyter kernel (the
ipykernel of the environment running the tests), with ``notebooks/`` as the
working directory, and must finish within ``TIMEOUT_S`` seconds in all; the
executed copy is discarded, the file on disk is left as committed. The
notebooks check their own claims with ``assert``, so a failing claim fails the
test. A second test checks that each notebook is committed with its outputs,
as the documentation shows them.
"""

from __future__ import annotations

import time
from pathlib import Path

import ipykernel  # noqa: F401  (the notebooks' kernel: a missing one must fail, not skip)
import nbclient
import nbclient.exceptions
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
# Seconds per notebook (and per cell, for nbclient). The slowest notebook
# takes about 50 s beside the other test workers on 2 cores; the margin is
# for a machine that other jobs load as well.
TIMEOUT_S = 300


def test_notebooks_exist() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}")
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT_S, f"{path.name} took {elapsed:.0f} s, limit {TIMEOUT_S} s"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_committed_with_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    not_run = [i for i, cell in enumerate(code_cells) if cell.get("execution_count") is None]
    errors = [
        i
        for i, cell in enumerate(code_cells)
        if any(output.get("output_type") == "error" for output in cell.get("outputs", []))
    ]
    assert not not_run, f"{path.name}: code cells {not_run} have not been executed"
    assert not errors, f"{path.name}: code cells {errors} hold error outputs"
