"""The demo behind ``python -m dropoutx demo`` runs end to end on a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropoutx._demo import run_demo

METHODS = ["no dropout", "inverted", "vanilla", "gaussian", "annealed"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """One two-epoch run, shared by the tests below; returns its result and stdout."""
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run_demo(epochs=2, out_dir=out_dir, seed=0, progress=False)
    return result, stdout.getvalue()


def test_every_method_has_one_value_per_epoch(demo: tuple[dict, str]) -> None:
    result, _ = demo
    assert list(result["results"]) == METHODS
    for history in result["results"].values():
        for metric in ("train_accuracy", "test_accuracy", "train_loss", "test_loss"):
            assert len(history[metric]) == 2
        assert all(0.0 <= a <= 1.0 for a in history["train_accuracy"] + history["test_accuracy"])
        assert history["seconds_per_epoch"] > 0


def test_two_epochs_already_learn_digits(demo: tuple[dict, str]) -> None:
    # Chance is 10%; two epochs of Adam take every method well past 80% on digits.
    result, _ = demo
    for name, history in result["results"].items():
        assert history["test_accuracy"][-1] > 0.8, name


def test_table_is_printed_and_returned(demo: tuple[dict, str]) -> None:
    result, printed = demo
    for text in (result["table"], printed):
        assert "train accuracy" in text
        assert "test accuracy" in text
        assert "gap (train - test)" in text
        assert "ms / epoch" in text
        for name in METHODS:
            assert name in text


def test_plot_is_a_png(demo: tuple[dict, str]) -> None:
    result, _ = demo
    plot = Path(result["plot"])
    assert plot.name == "demo.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rejects_zero_epochs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs"):
        run_demo(epochs=0, out_dir=tmp_path, progress=False)


def test_missing_optional_dependency_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "dropoutx\[demo\]"'):
        run_demo(epochs=1, out_dir=tmp_path, progress=False)
