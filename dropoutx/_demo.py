"""The demo behind ``python -m dropoutx demo``: one MLP, five kinds of dropout, real data.

It trains the same multilayer perceptron on scikit-learn's bundled digits data
set (1,797 8x8 images, no download) once per method: no dropout, inverted,
vanilla (weight-scaling inference), Gaussian and annealed dropout. Every run
starts from the same initial weights and sees the same mini-batches in the same
order; only the noise differs. It prints a table of final train and test
accuracy, the generalisation gap and the time per epoch, and saves the training
curves as a PNG.

matplotlib, scikit-learn and tqdm are optional dependencies
(``pip install "dropoutx[demo]"``); they are imported only when the demo runs,
so ``import dropoutx`` never needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dropoutx as dx

# A hidden-layer transform: (key, activations, step, deterministic) -> activations.
Transform = Callable[[jax.Array | None, jax.Array, jax.Array, bool], jax.Array]
Params = list[tuple[jax.Array, jax.Array]]

DEFAULT_EPOCHS = 100
RATE = 0.5
HIDDEN = (512, 512)
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
TEST_FRACTION = 0.5


@dataclass(frozen=True)
class _Method:
    """One way of perturbing the hidden activations, named as in the table."""

    name: str
    transform: Transform


def _methods(rate: float, total_steps: int) -> list[_Method]:
    """The methods compared, each at drop rate ``rate`` (annealed: from ``rate`` to 0)."""
    schedule = optax.linear_schedule(rate, 0.0, transition_steps=total_steps)

    def identity(
        key: jax.Array | None, h: jax.Array, step: jax.Array, deterministic: bool
    ) -> jax.Array:
        del key, step, deterministic
        return h

    def at_fixed_rate(fn: Callable[..., jax.Array]) -> Transform:
        def transform(
            key: jax.Array | None, h: jax.Array, step: jax.Array, deterministic: bool
        ) -> jax.Array:
            del step
            return fn(key, h, rate, deterministic=deterministic)

        return transform

    def annealed(
        key: jax.Array | None, h: jax.Array, step: jax.Array, deterministic: bool
    ) -> jax.Array:
        return dx.annealed_dropout(key, h, step, schedule, deterministic=deterministic)

    return [
        _Method("no dropout", identity),
        _Method("inverted", at_fixed_rate(dx.inverted_dropout)),
        _Method("vanilla", at_fixed_rate(dx.vanilla_dropout)),
        _Method("gaussian", at_fixed_rate(dx.gaussian_dropout)),
        _Method("annealed", annealed),
    ]


def _import_optional() -> tuple[Any, ...]:
    """Imports the demo's optional dependencies, or says how to install them.

    Returns:
      ``(load_digits, train_test_split, Figure, FigureCanvasAgg, tqdm)``.

    Raises:
      ImportError: if matplotlib, scikit-learn or tqdm is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from tqdm import tqdm
    except ImportError as error:
        raise ImportError(
            f"The dropoutx demo needs matplotlib, scikit-learn and tqdm ({error}). "
            'Install them with: pip install "dropoutx[demo]"'
        ) from error
    return load_digits, train_test_split, Figure, FigureCanvasAgg, tqdm


def _load_data(
    load_digits: Callable[..., Any], train_test_split: Callable[..., Any], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], split into stratified train and test halves.

    Returns:
      ``(x_train, y_train, x_test, y_test)`` as NumPy arrays.
    """
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return x_train, y_train, x_test, y_test


def _init(key: jax.Array, sizes: tuple[int, ...]) -> Params:
    """He-normal weights and zero biases for the layer sizes given."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (
            jax.random.normal(k, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in),
            jnp.zeros((fan_out,)),
        )
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def _logits(
    params: Params,
    x: jax.Array,
    transform: Transform,
    key: jax.Array | None,
    step: jax.Array,
    deterministic: bool,
) -> jax.Array:
    """ReLU MLP with ``transform`` after every hidden layer; ``key`` unused if deterministic."""
    num_hidden = len(params) - 1
    if deterministic or key is None:
        keys: Any = [None] * num_hidden
    else:
        keys = jax.random.split(key, num_hidden)
    for (w, b), layer_key in zip(params[:-1], keys, strict=True):
        x = transform(layer_key, jax.nn.relu(x @ w + b), step, deterministic)
    w, b = params[-1]
    return x @ w + b


def _loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _make_epoch(
    transform: Transform, optimizer: optax.GradientTransformation, batch_size: int
) -> Callable[..., Any]:
    """One epoch of mini-batch training, as a single function for ``jax.jit``.

    The step counter is part of the carried state, a traced value, so the
    annealed schedule changes the rate every step without recompiling.
    """

    def loss_fn(
        params: Params, x: jax.Array, y: jax.Array, key: jax.Array, step: jax.Array
    ) -> jax.Array:
        return _loss(_logits(params, x, transform, key, step, False), y)

    def epoch(
        params: Params,
        opt_state: Any,
        step: jax.Array,
        x: jax.Array,
        y: jax.Array,
        shuffle_key: jax.Array,
        dropout_key: jax.Array,
    ) -> tuple[Params, Any, jax.Array, jax.Array]:
        num_batches = x.shape[0] // batch_size
        order = jax.random.permutation(shuffle_key, x.shape[0])
        batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)
        keys = jax.random.split(dropout_key, num_batches)

        def train_step(carry: tuple, batch: tuple[jax.Array, jax.Array]) -> tuple[tuple, jax.Array]:
            params, opt_state, step = carry
            index, key = batch
            loss, grads = jax.value_and_grad(loss_fn)(params, x[index], y[index], key, step)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, step + 1), loss

        (params, opt_state, step), losses = jax.lax.scan(
            train_step, (params, opt_state, step), (batches, keys)
        )
        return params, opt_state, step, losses.mean()

    return epoch


def _make_evaluate(transform: Transform) -> Callable[..., Any]:
    """Deterministic (inference-mode) loss and accuracy on the train and test sets."""

    def evaluate(
        params: Params, x_train: jax.Array, y_train: jax.Array, x_test: jax.Array, y_test: jax.Array
    ) -> jax.Array:
        metrics = []
        for x, y in ((x_train, y_train), (x_test, y_test)):
            logits = _logits(params, x, transform, None, jnp.zeros((), jnp.int32), True)
            metrics += [_loss(logits, y), (logits.argmax(-1) == y).mean()]
        return jnp.stack(metrics)

    return evaluate


def _format_table(results: dict[str, dict[str, Any]], epochs: int) -> str:
    """The summary table: final accuracies, the gap between them, and the timing."""
    header = (
        f"{'method':<11} {'train accuracy':>14} {'test accuracy':>13} "
        f"{'gap (train - test)':>18} {'test loss':>9} {'ms / epoch':>10}"
    )
    lines = [f"MLP {'-'.join(map(str, (64, *HIDDEN, 10)))} on digits, {epochs} epochs", header]
    lines.append("-" * len(header))
    for name, result in results.items():
        train, test = result["train_accuracy"][-1], result["test_accuracy"][-1]
        lines.append(
            f"{name:<11} {100 * train:>13.2f}% {100 * test:>12.2f}% "
            f"{100 * (train - test):>13.2f} pts {result['test_loss'][-1]:>9.4f} "
            f"{1000 * result['seconds_per_epoch']:>10.1f}"
        )
    return "\n".join(lines)


def _plot(
    results: dict[str, dict[str, Any]],
    path: Path,
    figure_cls: Any,
    canvas_cls: Any,
) -> None:
    """Saves test accuracy and loss (train dashed, test solid) per epoch, per method."""
    figure = figure_cls(figsize=(11, 4), dpi=100)
    canvas_cls(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for index, (name, result) in enumerate(results.items()):
        color = f"C{index}"
        epochs = np.arange(1, len(result["test_accuracy"]) + 1)
        accuracy_axes.plot(
            epochs, 100 * np.asarray(result["test_accuracy"]), color=color, label=name
        )
        loss_axes.plot(epochs, result["test_loss"], color=color, label=f"{name} (test)")
        loss_axes.plot(epochs, result["train_loss"], color=color, linestyle="--", alpha=0.6)
    # The first epochs climb from chance; zoom on the range where the methods differ.
    lowest_final = min(100 * result["test_accuracy"][-1] for result in results.values())
    accuracy_axes.set_ylim(max(0.0, lowest_final - 4), 100)
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    accuracy_axes.legend()
    accuracy_axes.grid(alpha=0.3)
    loss_axes.set(
        xlabel="epoch",
        ylabel="cross-entropy",
        yscale="log",
        title="Loss (solid: test, dashed: train, inference mode)",
    )
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def run_demo(
    *,
    epochs: int = DEFAULT_EPOCHS,
    out_dir: str | Path = "demo_output",
    seed: int = 0,
    progress: bool = True,
    rate: float = RATE,
) -> dict[str, Any]:
    """Trains one MLP on digits with each kind of dropout; prints a table, saves a plot.

    The model is a ReLU MLP (64-512-512-10) trained with Adam on half of
    scikit-learn's digits (stratified, 898 images) and tested on the other
    half. The transform under comparison is applied after each hidden layer:
    none, ``dx.inverted_dropout``, ``dx.vanilla_dropout`` (evaluated with the
    ``x * (1 - rate)`` weight-scaling rule), ``dx.gaussian_dropout`` and
    ``dx.annealed_dropout`` with ``optax.linear_schedule(rate, 0, total_steps)``
    (Rennie, Goel & Thomas 2014). Every method starts from the same weights
    and sees the same batches; accuracy and loss are measured in inference
    mode after every epoch. Each method's epoch is one jitted ``lax.scan``; the
    time per epoch excludes the one-off compilation, which is reported apart.

    Args:
      epochs: passes over the training set, per method.
      out_dir: folder for the plot ``demo.png`` (created if needed).
      seed: seeds the split, the initial weights, the batch order and the noise.
      progress: show a tqdm progress bar on stderr.
      rate: the drop rate of every method (the annealed one starts there).

    Returns:
      A dict with ``"results"`` (method name -> ``train_accuracy``,
      ``test_accuracy``, ``train_loss``, ``test_loss``: one float per epoch;
      ``seconds_per_epoch`` and ``compile_seconds``: floats), ``"table"`` (the
      printed table), ``"plot"`` (the PNG's path), ``"epochs"``, ``"seed"``
      and ``"seconds"`` (the whole run's wall time).

    Raises:
      ImportError: if matplotlib, scikit-learn or tqdm is not installed.
      ValueError: if ``epochs`` is not a positive integer.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"run_demo: epochs must be a positive integer, got {epochs=}")
    load_digits, train_test_split, figure_cls, canvas_cls, tqdm = _import_optional()
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = map(
        jnp.asarray, _load_data(load_digits, train_test_split, seed)
    )
    steps_per_epoch = x_train.shape[0] // BATCH_SIZE
    optimizer = optax.adam(LEARNING_RATE)
    root = jax.random.key(seed)
    init_key, shuffle_root, dropout_root = jax.random.split(root, 3)
    initial_params = _init(init_key, (x_train.shape[1], *HIDDEN, 10))
    methods = _methods(rate, epochs * steps_per_epoch)

    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=epochs * len(methods), desc="dropoutx demo", unit="epoch", disable=not progress
    )
    with bar:
        for method in methods:
            params, opt_state = initial_params, optimizer.init(initial_params)
            step = jnp.zeros((), jnp.int32)
            compile_start = time.perf_counter()
            epoch_args = (params, opt_state, step, x_train, y_train, shuffle_root, dropout_root)
            epoch_fn = jax.jit(_make_epoch(method.transform, optimizer, BATCH_SIZE))
            train_epoch = epoch_fn.lower(*epoch_args).compile()
            evaluate_fn = jax.jit(_make_evaluate(method.transform))
            evaluate = evaluate_fn.lower(params, x_train, y_train, x_test, y_test).compile()
            compile_seconds = time.perf_counter() - compile_start
            history: dict[str, list[float]] = {
                "train_accuracy": [],
                "test_accuracy": [],
                "train_loss": [],
                "test_loss": [],
            }
            epoch_seconds = []
            for epoch in range(epochs):
                tic = time.perf_counter()
                params, opt_state, step, _ = train_epoch(
                    params,
                    opt_state,
                    step,
                    x_train,
                    y_train,
                    jax.random.fold_in(shuffle_root, epoch),
                    jax.random.fold_in(dropout_root, epoch),
                )
                jax.block_until_ready(params)
                epoch_seconds.append(time.perf_counter() - tic)
                metrics = np.asarray(evaluate(params, x_train, y_train, x_test, y_test))
                for name, value in zip(
                    ("train_loss", "train_accuracy", "test_loss", "test_accuracy"),
                    metrics.tolist(),
                    strict=True,
                ):
                    history[name].append(value)
                bar.set_postfix_str(
                    f"{method.name}: test accuracy {history['test_accuracy'][-1]:.1%}",
                    refresh=False,
                )
                bar.update()
            results[method.name] = {
                **history,
                "seconds_per_epoch": float(np.median(epoch_seconds)),
                "compile_seconds": compile_seconds,
            }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_path = out / "demo.png"
    _plot(results, plot_path, figure_cls, canvas_cls)
    seconds = time.perf_counter() - start
    table = _format_table(results, epochs)
    compile_total = sum(result["compile_seconds"] for result in results.values())
    print(table)
    print(
        f"Drop rate {rate} after each hidden layer (annealed: {rate} -> 0 linearly). "
        f"Accuracies in inference mode; ms / epoch is the median, without the one-off "
        f"compilation ({compile_total:.1f} s in all). Total {seconds:.1f} s."
    )
    print(f"Plot saved to {plot_path}")
    return {
        "results": results,
        "table": table,
        "plot": str(plot_path),
        "epochs": epochs,
        "seed": seed,
        "seconds": seconds,
    }
