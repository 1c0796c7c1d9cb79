"""The ``python -m dropoutx`` command line.

``python -m dropoutx`` (or ``python -m dropoutx check``) runs a self-check: it
draws a million units through every transform and prints the measured keep
fraction, mean and variance beside their exact expected values. ``python -m
dropoutx demo`` trains an MLP on a small subset of the digits data set with
each kind of dropout and several seeds, and reports mean ± standard deviation.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

import dropoutx as dx
from dropoutx import _demo

# Each statistic must lie within this many standard errors of its expectation;
# with 18 normal statistics the chance of a spurious failure is below 1e-5.
_SIGMAS = 5.0


@dataclass(frozen=True)
class _Case:
    """One transform applied to ``x = 1`` and the exact moments of its output."""

    name: str
    apply: Callable[[jax.Array, jax.Array], jax.Array]
    keep_fraction: float | None
    mean: float
    variance: float
    fourth_central_moment: float


def _bernoulli_case(name: str, apply: Callable, rate: float, value: float) -> _Case:
    """A two-point output: ``value`` with probability ``1 - rate``, else 0."""
    keep = 1 - rate
    mean = keep * value
    mu4 = keep * (value - mean) ** 4 + rate * mean**4
    return _Case(name, apply, keep, mean, keep * rate * value**2, mu4)


def _normal_case(name: str, apply: Callable, mean: float, variance: float) -> _Case:
    return _Case(name, apply, None, mean, variance, 3 * variance**2)


def _cases(rate: float, stddev: float) -> list[_Case]:
    keep = 1 - rate

    def schedule(step: jax.Array) -> jax.Array:
        return rate * (1 - step / 1000)

    return [
        _bernoulli_case(
            f"inverted_dropout(rate={rate})",
            lambda k, x: dx.inverted_dropout(k, x, rate),
            rate,
            1 / keep,
        ),
        _bernoulli_case(
            f"vanilla_dropout(rate={rate})", lambda k, x: dx.vanilla_dropout(k, x, rate), rate, 1.0
        ),
        _bernoulli_case(
            f"annealed_dropout(step=500, {rate}->0)",
            lambda k, x: dx.annealed_dropout(k, x, 500, schedule),
            rate / 2,
            1 / (1 - rate / 2),
        ),
        _normal_case(
            f"gaussian_dropout(rate={rate})",
            lambda k, x: dx.gaussian_dropout(k, x, rate),
            1.0,
            rate / keep,
        ),
        _normal_case(
            f"gaussian_noise(stddev={stddev})",
            lambda k, x: dx.gaussian_noise(k, x, stddev),
            1.0,
            stddev**2,
        ),
    ]


def self_check(size: int = 1_000_000, rate: float = 0.3, stddev: float = 0.5) -> bool:
    """Prints measured against expected statistics; returns whether all agree."""
    print(
        f"dropoutx {dx.__version__} self-check on {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}), jax {jax.__version__}, {size:,} units of x = 1"
    )
    print(f"Each measured value must lie within {_SIGMAS:g} standard errors of the expected one.")
    header = f"{'transform':<34} {'statistic':<14} {'measured':>10} {'expected':>10}  ok"
    print(header)
    print("-" * len(header))
    x = jnp.ones((size,), jnp.float32)
    all_ok = True
    for index, case in enumerate(_cases(rate, stddev)):
        y = case.apply(jax.random.key(index), x)
        rows = []
        if case.keep_fraction is not None:
            kept = float((y != 0).mean())
            p = case.keep_fraction
            rows.append(("keep fraction", kept, p, math.sqrt(p * (1 - p) / size)))
        rows.append(("mean", float(y.mean()), case.mean, math.sqrt(case.variance / size)))
        spread = math.sqrt(max(case.fourth_central_moment - case.variance**2, 0.0) / size)
        second_moment = float(jnp.mean((y - case.mean) ** 2))
        rows.append(("variance", second_moment, case.variance, spread))
        for statistic, measured, expected, standard_error in rows:
            # Float32 sums of 10^6 terms carry a relative rounding error of ~1e-6.
            tolerance = _SIGMAS * standard_error + 1e-5 * abs(expected)
            ok = abs(measured - expected) <= tolerance
            all_ok &= ok
            print(
                f"{case.name:<34} {statistic:<14} {measured:>10.5f} {expected:>10.5f}  "
                f"{'yes' if ok else 'NO'}"
            )
    print("self-check passed" if all_ok else "self-check FAILED")
    return all_ok


def _integer_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` that accepts an integer from ``minimum`` to ``maximum``."""
    allowed = f"an integer of at least {minimum}"
    if maximum is not None:
        allowed = f"an integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m dropoutx", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check", help="statistical self-check of every transform (default)")
    check.add_argument("--size", type=int, default=1_000_000, help="units per transform")
    demo = commands.add_parser(
        "demo",
        help="train an MLP on a digits subset with each kind of dropout, over several seeds",
        description=(
            f"Trains a {'-'.join(map(str, (64, *_demo.HIDDEN, 10)))} MLP on a small "
            "stratified subset of the digits data set "
            "with no dropout, inverted, vanilla, Gaussian and annealed dropout, once per "
            "seed; prints the final test accuracy and test loss of each method as mean ± "
            "standard deviation over the seeds, and each method's seed-by-seed difference "
            "from no dropout; saves the curves and every seed's result to a plot."
        ),
    )
    demo.add_argument(
        "--epochs",
        type=_integer_in(1),
        default=_demo.DEFAULT_EPOCHS,
        help="training epochs per method and seed (default: %(default)s)",
    )
    demo.add_argument(
        "--seeds",
        type=_integer_in(2),
        default=_demo.DEFAULT_SEEDS,
        help="runs per method, with seeds 0, 1, ..., SEEDS - 1; at least 2, as the "
        "spread needs two runs (default: %(default)s)",
    )
    demo.add_argument(
        "--train-size",
        type=_integer_in(_demo.BATCH_SIZE, _demo.MAX_TRAIN_SIZE),
        default=_demo.DEFAULT_TRAIN_SIZE,
        help=f"training images, from {_demo.BATCH_SIZE} to {_demo.MAX_TRAIN_SIZE}; the "
        f"rest of the {_demo.NUM_IMAGES:,} are the test set (default: %(default)s)",
    )
    demo.add_argument("--out", default="demo_output", help="folder for the plot demo.png")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.command == "demo":
        _demo.run_demo(
            epochs=args.epochs,
            seeds=args.seeds,
            train_size=args.train_size,
            out_dir=args.out,
            progress=not args.no_progress,
        )
        return 0
    size = args.size if args.command == "check" else 1_000_000
    return 0 if self_check(size=size) else 1


if __name__ == "__main__":
    sys.exit(main())
