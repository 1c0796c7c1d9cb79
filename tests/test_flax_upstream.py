"""Flax's own Dropout tests, run against dropoutx's modules.

What it proves: ``dropoutx.linen.Dropout`` and ``dropoutx.nnx.Dropout`` are
drop-in replacements as far as Flax's own tests can tell. With
``flax.linen.Dropout`` and ``flax.nnx.Dropout`` replaced by them, exactly 15
tests pass and none fails: the 11 of ``tests/linen/linen_test.py::
StochasticTest`` and the 4 of ``tests/nnx/nn/stochastic_test.py``, from the
Flax release that is installed. They include Flax's error-message matches, so
dropoutx's errors must start with Flax's wording.

Flax's code is not part of this repository. The test downloads the source
distribution of the installed Flax version from PyPI (with pip, once per
session), copies the two test files into a temporary directory outside the
repository, and runs them with pytest in a subprocess that loads
``tests/flax_upstream/swap_dropout.py`` as a plugin (``-p swap_dropout``),
which swaps the classes before Flax's test modules are imported. A failed
download fails the test; it is never skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import flax
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLUGIN_DIR = HERE / "flax_upstream"
FLAX_TEST_FILES = ("tests/linen/linen_test.py", "tests/nnx/nn/stochastic_test.py")
FLAX_TESTS = ("tests/linen/linen_test.py::StochasticTest", "tests/nnx/nn/stochastic_test.py")
EXPECTED_PASSED = 15


@pytest.fixture(scope="session")
def flax_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding Flax's two test files, from the installed version's sdist."""
    version = flax.__version__
    download = tmp_path_factory.mktemp("flax_sdist")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "flax"]
    command += [f"flax=={version}", "--dest", str(download)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    archive_path = download / f"flax-{version}.tar.gz"
    if result.returncode != 0 or not archive_path.is_file():
        pytest.fail(
            f"Could not download the source distribution of flax=={version} from "
            f"PyPI, which holds Flax's Dropout tests (pip exited with "
            f"{result.returncode}). This test needs access to PyPI.\n"
            f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("flax_tests")
    with tarfile.open(archive_path) as archive:
        for relative in FLAX_TEST_FILES:
            member = archive.extractfile(f"flax-{version}/{relative}")
            assert member is not None, f"flax-{version}.tar.gz has no {relative}"
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(member.read())
    # An empty configuration, so neither Flax's nor this repository's applies.
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


def outcome_counts(output: str) -> dict[str, int]:
    """The counts of pytest's summary line, e.g. ``{'passed': 13, 'failed': 2}``."""
    summaries = [
        line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)
    ]
    summary = summaries[-1] if summaries else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}


def test_flax_dropout_tests_pass_against_dropoutx(flax_tests: Path) -> None:
    command = [sys.executable, "-m", "pytest", "-p", "swap_dropout", "-p", "no:cacheprovider"]
    command += ["-q", "-rfE", "-c", str(flax_tests / "pytest.ini"), *FLAX_TESTS]
    # This checkout's dropoutx and the plugin come first on the path.
    path = os.pathsep.join(filter(None, [str(PLUGIN_DIR), str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        command,
        cwd=flax_tests,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = result.stdout + result.stderr
    counts = outcome_counts(result.stdout)
    assert "dropoutx swap: flax.linen.Dropout and flax.nnx.Dropout are dropoutx's" in output, output
    expected = {"passed": EXPECTED_PASSED}
    assert {k: v for k, v in counts.items() if k != "warnings"} == expected, output
