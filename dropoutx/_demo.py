"""The demo behind ``python -m dropoutx demo``: one wide MLP, five kinds of dropout, many seeds.

It trains the same multilayer perceptron on a small stratified subset of
scikit-learn's bundled digits data set (1,797 8x8 images, no download) and tests
it on the remaining images, once per method: no dropout, inverted, vanilla
(weight-scaling inference), Gaussian and annealed dropout. The set-up is chosen
to overfit without dropout (by default 200 training images, two hidden layers of
256 units, 200 epochs: the training loss goes on falling long after every
training image is classified right), so that regularisation has room to show.

Every method is trained with several seeds at once (``jax.vmap`` over seeds).
A seed fixes the train/test split, the initial weights, the batch order and the
noise; within a seed all methods share the first three, so only the noise
differs. The table reports each method's final test accuracy and test loss as
mean ± standard deviation over the seeds, and the plot shows the curves with
their spread and every seed's final result.

matplotlib, scikit-learn and tqdm are optional dependencies
(``pip install "dropoutx[demo]"``); they are imported only when the demo runs,
so ``import dropoutx`` never needs them.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
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

DEFAULT_EPOCHS = 200
DEFAULT_SEEDS = 8
DEFAULT_TRAIN_SIZE = 200
RATE = 0.5
HIDDEN = (256, 256)
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
NUM_CLASSES = 10
NUM_IMAGES = 1797  # scikit-learn's digits
MIN_TEST_SIZE = 300
MAX_TRAIN_SIZE = NUM_IMAGES - MIN_TEST_SIZE
CURVE_POINTS = 25  # evaluations per run, spread evenly over the epochs
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


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


def _check_integer(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """Raises unless ``value`` is an integer from ``minimum`` to ``maximum`` (if given)."""
    allowed = f"an integer from {minimum} to {maximum}" if maximum else f"an integer >= {minimum}"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"run_demo: {name} must be {allowed}, got {name}={value!r}")
    if int(value) < minimum or (maximum is not None and int(value) > maximum):
        raise ValueError(f"run_demo: {name} must be {allowed}, got {name}={value!r}")


def _check_options(
    *, epochs: object, seed: object, seeds: object, train_size: object, rate: object
) -> None:
    """Raises ``TypeError`` or ``ValueError`` naming the first bad option of ``run_demo``."""
    _check_integer("seed", seed, 0)
    _check_integer("epochs", epochs, 1)
    _check_integer("seeds", seeds, 2)  # a standard deviation needs two runs
    _check_integer("train_size", train_size, BATCH_SIZE, MAX_TRAIN_SIZE)
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool):
        raise TypeError(f"run_demo: rate must be a number in [0, 1), got {rate=}")
    if not 0 <= float(rate) < 1:
        raise ValueError(f"run_demo: rate must be a number in [0, 1), got {rate=}")


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


def _load_splits(
    load_digits: Callable[..., Any],
    train_test_split: Callable[..., Any],
    seeds: Sequence[int],
    train_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], one stratified split per seed, stacked on a leading axis.

    Returns:
      ``(x_train, y_train, x_test, y_test)`` as NumPy arrays of shape
      ``(len(seeds), train_size, 64)``, ``(len(seeds), train_size)``,
      ``(len(seeds), test_size, 64)`` and ``(len(seeds), test_size)``.
    """
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    splits = [
        train_test_split(images, labels, train_size=train_size, stratify=labels, random_state=seed)
        for seed in seeds
    ]
    x_train, x_test, y_train, y_test = (np.stack(part) for part in zip(*splits, strict=True))
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


def _select(methods: Sequence[_Method], method_index: jax.Array) -> Transform:
    """The transform of ``methods[method_index]``, chosen at run time by ``lax.switch``.

    One compiled training step then serves every method: the index is an
    argument, not a constant, so changing it does not recompile.
    """

    def transform(
        key: jax.Array | None, h: jax.Array, step: jax.Array, deterministic: bool
    ) -> jax.Array:
        branches = [
            lambda key, h, step, fn=method.transform: fn(key, h, step, deterministic)
            for method in methods
        ]
        return jax.lax.switch(method_index, branches, key, h, step)

    return transform


def _make_epoch(
    methods: Sequence[_Method], optimizer: optax.GradientTransformation, batch_size: int
) -> Callable[..., Any]:
    """One epoch of mini-batch training for one seed, as a single function to vmap and jit.

    The step counter is part of the carried state, a traced value, so the
    annealed schedule changes the rate every step without recompiling; the
    epoch index is traced too and folded into the seed's keys, and the method
    index picks the transform (see ``_select``).
    """

    def epoch(
        params: Params,
        opt_state: Any,
        step: jax.Array,
        x: jax.Array,
        y: jax.Array,
        shuffle_root: jax.Array,
        dropout_root: jax.Array,
        epoch_index: jax.Array,
        method_index: jax.Array,
    ) -> tuple[Params, Any, jax.Array]:
        transform = _select(methods, method_index)

        def loss_fn(
            params: Params, x: jax.Array, y: jax.Array, key: jax.Array, step: jax.Array
        ) -> jax.Array:
            return _loss(_logits(params, x, transform, key, step, False), y)

        num_batches = x.shape[0] // batch_size
        shuffle_key = jax.random.fold_in(shuffle_root, epoch_index)
        order = jax.random.permutation(shuffle_key, x.shape[0])
        batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)
        keys = jax.random.split(jax.random.fold_in(dropout_root, epoch_index), num_batches)

        def train_step(carry: tuple, batch: tuple[jax.Array, jax.Array]) -> tuple[tuple, None]:
            params, opt_state, step = carry
            index, key = batch
            grads = jax.grad(loss_fn)(params, x[index], y[index], key, step)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, step + 1), None

        (params, opt_state, step), _ = jax.lax.scan(
            train_step, (params, opt_state, step), (batches, keys)
        )
        return params, opt_state, step

    return epoch


def _make_evaluate(methods: Sequence[_Method]) -> Callable[..., Any]:
    """Inference-mode loss and accuracy on the train and test sets, in ``METRICS`` order."""

    def evaluate(
        params: Params,
        x_train: jax.Array,
        y_train: jax.Array,
        x_test: jax.Array,
        y_test: jax.Array,
        method_index: jax.Array,
    ) -> jax.Array:
        transform = _select(methods, method_index)
        metrics = []
        for x, y in ((x_train, y_train), (x_test, y_test)):
            logits = _logits(params, x, transform, None, jnp.zeros((), jnp.int32), True)
            metrics += [_loss(logits, y), (logits.argmax(-1) == y).mean()]
        return jnp.stack(metrics)

    return evaluate


def _evaluation_epochs(epochs: int) -> list[int]:
    """The 1-based epochs after which the runs are evaluated: about ``CURVE_POINTS``, the last too.

    >>> _evaluation_epochs(3)
    [1, 2, 3]
    >>> points = _evaluation_epochs(100)
    >>> len(points), points[0], points[-1]
    (25, 4, 100)
    """
    every = max(1, epochs // CURVE_POINTS)
    return sorted({*range(every, epochs + 1, every), epochs})


def _mean_and_spread(
    values: np.ndarray, scale: float = 1.0, digits: int = 2, signed: bool = False
) -> str:
    """``mean ± standard deviation`` of ``scale * values`` (over seeds, with ddof 1).

    >>> _mean_and_spread(np.array([0.9, 0.92, 0.94]), scale=100)
    '92.00 ± 2.00'
    >>> _mean_and_spread(np.array([0.01, 0.03]), digits=3, signed=True)
    '+0.020 ± 0.014'
    """
    scaled = scale * np.asarray(values, dtype=np.float64)
    sign = "+" if signed else ""
    return f"{scaled.mean():{sign}.{digits}f} ± {scaled.std(ddof=1):.{digits}f}"


def _setup_line(num_seeds: int, train_size: int, test_size: int, epochs: int) -> str:
    sizes = "-".join(map(str, (64, *HIDDEN, NUM_CLASSES)))
    return (
        f"MLP {sizes} on {train_size} digits, tested on the other {test_size}; "
        f"{epochs} epochs of Adam (learning rate {LEARNING_RATE:g}, batch {BATCH_SIZE}), "
        f"{num_seeds} seeds"
    )


def _format_table(
    results: dict[str, dict[str, Any]], num_seeds: int, train_size: int, test_size: int, epochs: int
) -> str:
    """The summary tables: final results per method, then each method paired with the first.

    Every figure is a mean ± standard deviation over seeds. The second table
    takes, seed by seed, the method's result minus the reference's (the first
    method, no dropout), which removes the spread that the split and the
    initial weights add to both.
    """
    header = (
        f"{'method':<11} {'train accuracy':>14} {'test accuracy':>16} {'test loss':>17} "
        f"{'gap (train - test)':>20} {'ms / epoch':>11}"
    )
    lines = [_setup_line(num_seeds, train_size, test_size, epochs), header, "-" * len(header)]
    for name, result in results.items():
        train, test = result["train_accuracy"][-1], result["test_accuracy"][-1]
        lines.append(
            f"{name:<11} {100 * train.mean():>13.2f}% "
            f"{_mean_and_spread(test, scale=100):>15}% "
            f"{_mean_and_spread(result['test_loss'][-1], digits=3):>17} "
            f"{100 * (train - test).mean():>16.2f} pts "
            f"{1000 * result['seconds_per_epoch']:>11.1f}"
        )
    (reference_name, reference), *others = results.items()
    lines += [
        "",
        f"Paired with {reference_name} (same seed: method minus {reference_name}):",
        f"{'method':<11} {'test accuracy':>20} {'test loss':>17} "
        f"{'seeds with higher accuracy':>28} {'seeds with lower loss':>23}",
    ]
    lines.append("-" * len(lines[-1]))
    for name, result in others:
        accuracy = result["test_accuracy"][-1] - reference["test_accuracy"][-1]
        loss = result["test_loss"][-1] - reference["test_loss"][-1]
        lines.append(
            f"{name:<11} {_mean_and_spread(accuracy, scale=100, signed=True):>16} pts "
            f"{_mean_and_spread(loss, digits=3, signed=True):>17} "
            f"{f'{(accuracy > 0).sum()} of {num_seeds}':>28} "
            f"{f'{(loss < 0).sum()} of {num_seeds}':>23}"
        )
    return "\n".join(lines)


def _plot(
    results: dict[str, dict[str, Any]],
    evaluated: list[int],
    title: str,
    path: Path,
    figure_cls: Any,
    canvas_cls: Any,
) -> None:
    """Curves (mean over seeds, band of ± 1 sd) above the final result of every seed."""
    figure = figure_cls(figsize=(12, 8.5), dpi=100)
    canvas_cls(figure)
    (accuracy_axes, loss_axes), (final_accuracy_axes, final_loss_axes) = figure.subplots(2, 2)
    epochs = np.asarray(evaluated)
    names = list(results)
    for index, (name, result) in enumerate(results.items()):
        color = f"C{index}"
        for axes, values, scale in (
            (accuracy_axes, result["test_accuracy"], 100.0),
            (loss_axes, result["test_loss"], 1.0),
        ):
            mean, spread = scale * values.mean(1), scale * values.std(1, ddof=1)
            axes.plot(epochs, mean, color=color, label=name)
            axes.fill_between(epochs, mean - spread, mean + spread, color=color, alpha=0.2)
        loss_axes.plot(epochs, result["train_loss"].mean(1), color=color, linestyle="--", alpha=0.6)
        for axes, values in (
            (final_accuracy_axes, 100 * result["test_accuracy"][-1]),
            (final_loss_axes, result["test_loss"][-1]),
        ):
            offsets = np.linspace(-0.15, 0.15, len(values))
            axes.scatter(index + offsets, values, color=color, s=18, alpha=0.7)
            axes.errorbar(
                index + 0.3,
                values.mean(),
                yerr=values.std(ddof=1),
                fmt="o",
                color="black",
                capsize=4,
            )
    # Thin grey lines join a seed's results across methods: the comparison is paired.
    for axes, metric, scale in (
        (final_accuracy_axes, "test_accuracy", 100.0),
        (final_loss_axes, "test_loss", 1.0),
    ):
        finals = np.stack([scale * results[name][metric][-1] for name in names])
        offsets = np.linspace(-0.15, 0.15, finals.shape[1])
        for seed_index in range(finals.shape[1]):
            axes.plot(
                np.arange(len(names)) + offsets[seed_index],
                finals[:, seed_index],
                color="grey",
                linewidth=0.5,
                alpha=0.5,
            )
        axes.set_xticks(range(len(names)), names)
        axes.grid(alpha=0.3, axis="y")
    # The first epochs climb from chance; zoom on the range where the methods differ.
    final_spans = [
        100 * (r["test_accuracy"][-1].mean() + sign * r["test_accuracy"][-1].std(ddof=1))
        for r in results.values()
        for sign in (-1, 1)
    ]
    accuracy_axes.set_ylim(max(0.0, min(final_spans) - 4), min(100.0, max(final_spans) + 1))
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (± 1 sd)")
    accuracy_axes.legend()
    accuracy_axes.grid(alpha=0.3)
    loss_axes.set(
        xlabel="epoch",
        ylabel="cross-entropy",
        yscale="log",
        title="Loss (solid: test ± 1 sd, dashed: train mean)",
    )
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    final_accuracy_axes.set(
        ylabel="test accuracy (%)", title="Final test accuracy: seeds (dots), mean ± 1 sd"
    )
    final_loss_axes.set(
        ylabel="test cross-entropy", title="Final test loss: seeds (dots), mean ± 1 sd"
    )
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)


def run_demo(
    *,
    epochs: int = DEFAULT_EPOCHS,
    out_dir: str | Path = "demo_output",
    seed: int = 0,
    seeds: int = DEFAULT_SEEDS,
    train_size: int = DEFAULT_TRAIN_SIZE,
    progress: bool = True,
    rate: float = RATE,
) -> dict[str, Any]:
    """Trains one MLP on a digits subset with each kind of dropout and several seeds.

    The model is a ReLU MLP (64-256-256-10) trained with Adam on a stratified
    subset of ``train_size`` of scikit-learn's digits and tested on all the
    other images. The transform under comparison is applied after each hidden
    layer: none, ``dx.inverted_dropout``, ``dx.vanilla_dropout`` (evaluated with
    the ``x * (1 - rate)`` weight-scaling rule), ``dx.gaussian_dropout`` and
    ``dx.annealed_dropout`` with ``optax.linear_schedule(rate, 0, total_steps)``
    (Rennie, Goel & Thomas 2014).

    Seed ``seed + i`` (for ``i < seeds``) draws the split, the initial weights,
    the batch order and the noise of run ``i``; the methods share all but the
    noise, so their comparison is paired. All seeds of a method train at once:
    an epoch is one jitted ``lax.scan`` over batches, vmapped over seeds, and
    compiled once for all methods (``lax.switch`` on the method index). Loss
    and accuracy are measured in inference mode about ``CURVE_POINTS`` times
    per run. The time per epoch is for all seeds together and excludes the
    one-off compilation, which is reported apart.

    Args:
      epochs: passes over the training set, per method.
      out_dir: folder for the plot ``demo.png`` (created if needed).
      seed: the first seed; the runs use ``seed, seed + 1, ..., seed + seeds - 1``.
      seeds: how many seeds (runs per method), at least 2.
      train_size: training images (stratified over the ten digits); the test
        set is the rest of the 1,797.
      progress: show a tqdm progress bar on stderr.
      rate: the drop rate of every method (the annealed one starts there).

    Returns:
      A dict with ``"results"`` (method name -> ``train_accuracy``,
      ``test_accuracy``, ``train_loss``, ``test_loss``: NumPy arrays of shape
      ``(len(evaluated_epochs), seeds)``; ``seconds_per_epoch``: a float),
      ``"evaluated_epochs"`` (list of ints), ``"table"`` (the printed
      tables), ``"plot"`` (the PNG's path), ``"epochs"``, ``"seeds"`` (the
      list of seeds used), ``"train_size"``, ``"test_size"``,
      ``"compile_seconds"`` and ``"seconds"`` (the whole run's wall time).

    Raises:
      ImportError: if matplotlib, scikit-learn or tqdm is not installed.
      TypeError: if ``epochs``, ``seed``, ``seeds`` or ``train_size`` is not an integer,
        or ``rate`` is not a real number.
      ValueError: if ``epochs`` is below 1, ``seed`` below 0, ``seeds`` below 2, ``train_size``
        outside [32, 1497] or ``rate`` outside [0, 1).
    """
    _check_options(epochs=epochs, seed=seed, seeds=seeds, train_size=train_size, rate=rate)
    load_digits, train_test_split, figure_cls, canvas_cls, tqdm = _import_optional()
    start = time.perf_counter()
    seed_values = [seed + i for i in range(seeds)]
    x_train, y_train, x_test, y_test = map(
        jnp.asarray, _load_splits(load_digits, train_test_split, seed_values, train_size)
    )
    test_size = x_test.shape[1]
    steps_per_epoch = train_size // BATCH_SIZE
    optimizer = optax.adam(LEARNING_RATE)
    roots = jax.vmap(lambda s: jax.random.split(jax.random.key(s), 3))(jnp.asarray(seed_values))
    init_keys, shuffle_roots, dropout_roots = roots[:, 0], roots[:, 1], roots[:, 2]
    sizes = (x_train.shape[-1], *HIDDEN, NUM_CLASSES)
    initial_params = jax.vmap(lambda k: _init(k, sizes))(init_keys)
    initial_opt_state = jax.vmap(optimizer.init)(initial_params)
    methods = _methods(rate, epochs * steps_per_epoch)
    evaluated = _evaluation_epochs(epochs)

    # One compiled epoch and one compiled evaluation serve all methods (see _select).
    compile_start = time.perf_counter()
    step = jnp.zeros((seeds,), jnp.int32)
    index = jnp.zeros((), jnp.int32)
    train_epoch = (
        jax.jit(
            jax.vmap(_make_epoch(methods, optimizer, BATCH_SIZE), in_axes=(0,) * 7 + (None,) * 2)
        )
        .lower(
            initial_params,
            initial_opt_state,
            step,
            x_train,
            y_train,
            shuffle_roots,
            dropout_roots,
            index,
            index,
        )
        .compile()
    )
    evaluate = (
        jax.jit(jax.vmap(_make_evaluate(methods), in_axes=(0,) * 5 + (None,)))
        .lower(initial_params, x_train, y_train, x_test, y_test, index)
        .compile()
    )
    compile_seconds = time.perf_counter() - compile_start

    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=epochs * len(methods), desc="dropoutx demo", unit="epoch", disable=not progress
    )
    with bar:
        for method_index, method in enumerate(methods):
            index = jnp.asarray(method_index, jnp.int32)
            params, opt_state = initial_params, initial_opt_state
            step = jnp.zeros((seeds,), jnp.int32)
            history: list[np.ndarray] = []
            epoch_seconds = []
            for epoch in range(1, epochs + 1):
                tic = time.perf_counter()
                params, opt_state, step = train_epoch(
                    params,
                    opt_state,
                    step,
                    x_train,
                    y_train,
                    shuffle_roots,
                    dropout_roots,
                    jnp.asarray(epoch, jnp.int32),
                    index,
                )
                jax.block_until_ready(params)
                epoch_seconds.append(time.perf_counter() - tic)
                if epoch in evaluated:
                    metrics = evaluate(params, x_train, y_train, x_test, y_test, index)
                    history.append(np.asarray(metrics))
                    bar.set_postfix_str(
                        f"{method.name}: mean test accuracy {history[-1][:, 3].mean():.1%}",
                        refresh=False,
                    )
                bar.update()
            stacked = np.stack(history)  # (evaluations, seeds, metrics)
            results[method.name] = {
                **{name: stacked[..., i] for i, name in enumerate(METRICS)},
                "seconds_per_epoch": float(np.median(epoch_seconds)),
            }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_path = out / "demo.png"
    setup = _setup_line(seeds, train_size, test_size, epochs)
    _plot(results, evaluated, f"{setup}; drop rate {rate}", plot_path, figure_cls, canvas_cls)
    seconds = time.perf_counter() - start
    table = _format_table(results, seeds, train_size, test_size, epochs)
    print(table)
    print(
        f"Mean ± standard deviation over seeds {seed_values[0]}-{seed_values[-1]}; a seed draws "
        "the split, the initial weights, the batch order and the noise, and the methods share "
        "all but the noise.\n"
        f"Accuracy and loss in inference mode after the last epoch; drop rate {rate} after each "
        f"hidden layer (annealed: {rate} -> 0 linearly).\n"
        f"ms / epoch: median, all {seeds} seeds at once (vmapped), without the one-off "
        f"compilation ({compile_seconds:.1f} s). Total {seconds:.1f} s."
    )
    print(f"Plot saved to {plot_path}")
    return {
        "results": results,
        "evaluated_epochs": evaluated,
        "table": table,
        "plot": str(plot_path),
        "epochs": epochs,
        "seeds": seed_values,
        "train_size": train_size,
        "test_size": test_size,
        "compile_seconds": compile_seconds,
        "seconds": seconds,
    }
