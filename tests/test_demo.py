"""The demo behind ``python -m dropoutx demo``, run end to end on a tiny budget.

The shared run trains on 64 images for 2 epochs with 3 seeds: enough to check
the shape of every result, that the table reports mean ± standard deviation
computed from those results, and that seeds give different runs, in seconds.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropoutx import _cli, _demo
from dropoutx._demo import run_demo

METHODS = ["no dropout", "inverted", "vanilla", "gaussian", "annealed"]
METRICS = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
TINY = {"epochs": 2, "seeds": 3, "train_size": 64, "progress": False}


def _run_quietly(**options: Any) -> tuple[dict[str, Any], str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run_demo(**options)
    return result, stdout.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One tiny run, shared by the tests below; returns its result and stdout."""
    return _run_quietly(out_dir=tmp_path_factory.mktemp("demo"), seed=0, **TINY)


def test_every_method_has_one_value_per_evaluation_and_seed(demo: tuple[dict, str]) -> None:
    result, _ = demo
    assert list(result["results"]) == METHODS
    assert result["evaluated_epochs"] == [1, 2]
    assert result["seeds"] == [0, 1, 2]
    assert (result["train_size"], result["test_size"]) == (64, _demo.NUM_IMAGES - 64)
    for history in result["results"].values():
        for metric in METRICS:
            assert history[metric].shape == (2, 3), metric
            assert np.all(np.isfinite(history[metric])), metric
        for metric in ("train_accuracy", "test_accuracy"):
            assert np.all((history[metric] >= 0) & (history[metric] <= 1)), metric
        assert history["seconds_per_epoch"] > 0


def test_no_dropout_learns_in_two_epochs(demo: tuple[dict, str]) -> None:
    # Four Adam steps on 64 images: the training loss falls on every seed, and test
    # accuracy is at least twice chance (10%), far above what an untrained MLP scores.
    result, _ = demo
    history = result["results"]["no dropout"]
    assert np.all(history["train_loss"][1] < history["train_loss"][0])
    assert np.all(history["test_accuracy"][-1] > 0.2)


def test_seeds_give_different_runs(demo: tuple[dict, str]) -> None:
    # Each seed has its own split and weights: no two seeds end with the same test loss.
    result, _ = demo
    for name, history in result["results"].items():
        final = history["test_loss"][-1]
        assert len(set(final.tolist())) == len(final), name


def test_methods_differ_within_a_seed(demo: tuple[dict, str]) -> None:
    # Same split, weights and batches, but the noise (or its absence) differs.
    result, _ = demo
    finals = [tuple(h["test_loss"][-1].tolist()) for h in result["results"].values()]
    assert len(set(finals)) == len(METHODS)


def test_a_seed_gives_the_same_run_whatever_the_number_of_seeds(
    demo: tuple[dict, str], tmp_path: Path
) -> None:
    # Seeds 1 and 2 alone must reproduce columns 1 and 2 of the three-seed run (vmap
    # changes only the batching, up to float32 rounding), and the seed count is respected.
    three, _ = demo
    two, _ = _run_quietly(out_dir=tmp_path, seed=1, **{**TINY, "seeds": 2})
    assert two["seeds"] == [1, 2]
    for name in METHODS:
        for metric in METRICS:
            assert two["results"][name][metric].shape == (2, 2)
            np.testing.assert_allclose(
                two["results"][name][metric],
                three["results"][name][metric][:, 1:],
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{name} {metric}",
            )


def test_table_reports_mean_and_standard_deviation_of_the_results(
    demo: tuple[dict, str],
) -> None:
    result, printed = demo
    assert result["table"] in printed
    assert "3 seeds" in result["table"]
    assert "Mean ± standard deviation over seeds 0-2" in printed
    main_table = result["table"].split("Paired with")[0]
    rows = {line.split("  ")[0]: line for line in main_table.splitlines()}
    for name in METHODS:
        history = result["results"][name]
        accuracy = 100 * history["test_accuracy"][-1]
        loss = history["test_loss"][-1]
        expected_accuracy = f"{accuracy.mean():.2f} ± {accuracy.std(ddof=1):.2f}%"
        expected_loss = f"{loss.mean():.3f} ± {loss.std(ddof=1):.3f}"
        assert expected_accuracy in rows[name], (name, rows[name])
        assert expected_loss in rows[name], (name, rows[name])


def test_table_pairs_every_method_with_no_dropout(demo: tuple[dict, str]) -> None:
    result, _ = demo
    table = result["table"]
    paired = table[table.index("Paired with no dropout") :].splitlines()[3:]
    assert [line.split("  ")[0] for line in paired] == METHODS[1:]
    reference = result["results"]["no dropout"]
    for line, name in zip(paired, METHODS[1:], strict=True):
        difference = 100 * (
            result["results"][name]["test_accuracy"][-1] - reference["test_accuracy"][-1]
        )
        assert f"{difference.mean():+.2f} ± {difference.std(ddof=1):.2f} pts" in line
        counts = re.findall(r"(\d) of 3", line)
        assert len(counts) == 2 and int(counts[0]) == int((difference > 0).sum()), line


def test_plot_is_a_png(demo: tuple[dict, str]) -> None:
    result, _ = demo
    plot = Path(result["plot"])
    assert plot.name == "demo.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1, got epochs=0"),
        ({"seeds": 1}, ValueError, "seeds must be an integer >= 2, got seeds=1"),
        ({"seeds": 2.0}, TypeError, "seeds must be an integer >= 2, got seeds=2.0"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0, got seed=-1"),
        ({"train_size": 31}, ValueError, "train_size must be an integer from 32 to 1497"),
        ({"train_size": 1498}, ValueError, "train_size must be .* got train_size=1498"),
        ({"rate": 1.0}, ValueError, r"rate must be a number in \[0, 1\), got rate=1.0"),
        ({"rate": "0.5"}, TypeError, "rate must be a number"),
    ],
)
def test_rejects_bad_options_naming_them(
    options: dict[str, Any], error: type[Exception], message: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=f"run_demo: {message}"):
        run_demo(out_dir=tmp_path, progress=False, **options)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "1"], "argument --seeds: expected an integer of at least 2, got '1'"),
        (["--seeds", "three"], "argument --seeds: expected an integer of at least 2, got 'three'"),
        (["--epochs", "0"], "argument --epochs: expected an integer of at least 1, got '0'"),
        (["--train-size", "5000"], "argument --train-size: expected an integer from 32 to 1497"),
    ],
)
def test_command_line_rejects_bad_options_naming_them(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["demo", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_passes_its_options_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_demo, "run_demo", lambda **options: calls.append(options))
    out = str(tmp_path)
    argv = ["--epochs", "7", "--seeds", "4", "--train-size", "100", "--out", out, "--no-progress"]
    assert _cli.main(["demo", *argv]) == 0
    assert _cli.main(["demo"]) == 0
    assert calls == [
        {"epochs": 7, "seeds": 4, "train_size": 100, "out_dir": out, "progress": False},
        {
            "epochs": _demo.DEFAULT_EPOCHS,
            "seeds": _demo.DEFAULT_SEEDS,
            "train_size": _demo.DEFAULT_TRAIN_SIZE,
            "out_dir": "demo_output",
            "progress": True,
        },
    ]


def test_defaults_are_an_overfitting_regime_with_several_seeds() -> None:
    # The set-up the README describes: a few hundred images, wide layers, many epochs.
    assert _demo.DEFAULT_SEEDS >= 3
    assert _demo.DEFAULT_TRAIN_SIZE <= 300
    assert min(_demo.HIDDEN) >= 4 * 64  # far more units than input features
    assert _demo.DEFAULT_EPOCHS * (_demo.DEFAULT_TRAIN_SIZE // _demo.BATCH_SIZE) >= 1000


def test_missing_optional_dependency_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "dropoutx\[demo\]"'):
        run_demo(epochs=1, out_dir=tmp_path, progress=False)
