"""Benchmarks dropoutx against Flax, ``jax.random.bernoulli`` and PyTorch dropout.

Run from the repository root::

    python benchmarks/run.py            # full sizes; writes benchmarks/results-<backend>.md
    python benchmarks/run.py --quick    # small sizes and few repeats, for a smoke test

In one process, for each shape and dtype, it measures:

* the median wall time of three passes, jitted and after warm-up: the forward
  pass ``dropout(key, x, rate)``; the gradient of ``sum(dropout(key, x) * w)``
  with respect to ``x``; and a split ``jax.vjp``, its forward and its backward
  jitted separately so that the residuals are materialised between them. Each
  method runs once per round, round after round, so that load from other
  processes falls on all of them alike. The copy floor ``x * 2`` goes through
  the same three passes.
* the bytes per element of ``x`` that reverse-mode autodiff saves for the
  backward pass of one dropout layer
  (``jax._src.ad_checkpoint.saved_residuals``);
* the compiled temporary memory
  (``jax.jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``)
  that dropout adds to the gradient of a ``lax.scan`` model with dropout in
  every layer, ``h = dropout(key_l, tanh(h @ W_l))``, over the same model with
  dropout replaced by the identity.

Among the methods, ``previous generator`` is dropoutx's mask before issue 11
(one 20-round Threefry block hashed per element, 32-bit threshold), so the
gain of today's generator (one 13-round block shared by four elements) is
measured in the same run; ``previous noise`` and ``dropoutx.gaussian_dropout``
do the same for Gaussian dropout's noise (before: ``jax.random.normal``'s
20-round block and inverse CDF per element; now: a 13-round block and a
Box-Muller transform per element).

It then checks the targets of issues 4 and 11, prints PASS or FAIL for each,
and prints the results as markdown, naming the machine and the versions, which
it also writes to ``--out``. The backend is whatever ``jax.default_backend()`` is, so
the script runs unchanged on CPU and GPU. PyTorch is timed only if it can be
imported (on CUDA when JAX runs on a GPU and torch sees one).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from flax import nnx
from jax._src.ad_checkpoint import saved_residuals

import dropoutx as dx
from dropoutx import _random

RATE = 0.5
SCAN_LAYERS = 8

FLOOR = "copy floor (x * 2)"
DROPOUTX = "dropoutx.dropout"
LINEN = "flax.linen.Dropout"
NNX = "flax.nnx.Dropout"
BERNOULLI = "bernoulli + where"
TORCH = "torch F.dropout (eager)"
PREVIOUS = "previous generator (1 block/element)"
GAUSSIAN = "dropoutx.gaussian_dropout"
PREVIOUS_NOISE = "previous noise (20 rounds, inverse CDF)"

MODES = ("forward", "gradient", "vjp")
MODE_TITLES = {
    "forward": f"Forward: `dropout(key, x, {RATE})`",
    "gradient": f"Gradient: `grad(sum(dropout(key, x, {RATE}) * w))` w.r.t. `x`",
    "vjp": "Split `jax.vjp`: jitted forward, then jitted backward applied to `w`",
}

Layer = Callable[[jax.Array, jax.Array], jax.Array]
"""A dropout layer as a function ``(key, x) -> y``."""

Step = Callable[[], object]
"""One timed call, which returns only when its work is done."""


@dataclasses.dataclass(frozen=True)
class Config:
    """What to measure: shapes, dtypes and the number of timed rounds."""

    shapes: tuple[tuple[int, int], ...]
    dtypes: tuple[jnp.dtype, ...]
    repeats: int
    warmup: int

    @property
    def target_shape(self) -> tuple[int, int]:
        """The shape at which the timing targets are checked: the largest."""
        return max(self.shapes, key=lambda shape: shape[0] * shape[1])


@dataclasses.dataclass(frozen=True)
class Timing:
    """The median time of one pass of one method."""

    shape: tuple[int, int]
    dtype: str
    mode: str
    method: str
    ms: float


@dataclasses.dataclass(frozen=True)
class Residual:
    """What one dropout layer saves for its backward pass."""

    shape: tuple[int, int]
    dtype: str
    method: str
    bytes_per_element: float
    saved: str


@dataclasses.dataclass(frozen=True)
class ScanMemory:
    """Compiled temporary memory of the scanned model's gradient."""

    shape: tuple[int, int]
    dtype: str
    method: str
    temp_bytes: int
    added_bytes: int
    added_per_layer_bytes: float


@dataclasses.dataclass(frozen=True)
class Check:
    """One target of issue 4 and whether it is met."""

    description: str
    passed: bool
    measured: str

    @property
    def line(self) -> str:
        """``PASS description: measured`` (or ``FAIL ...``)."""
        return f"{'PASS' if self.passed else 'FAIL'} {self.description}: {self.measured}"


def jax_layers(rate: float) -> dict[str, Layer]:
    """The JAX methods under test, the copy floor first.

    Flax's modules are called functionally: ``linen.Dropout.apply`` with a
    ``dropout`` rng, and an ``nnx.Dropout`` given the key as its ``rngs``.
    ``bernoulli + where`` is the code both Flax modules run.
    """
    keep_prob = 1.0 - rate
    previous_threshold = np.uint32(math.floor(np.float32(rate) * 2**32))
    sigma = np.float32(math.sqrt(rate / (1 - rate)))

    # dropoutx's mask and noise before issue 11, as its code had them: one
    # fused 20-round Threefry-2x32 block per element (bit for bit
    # jax.random.bits, and by the inverse CDF jax.random.normal), with the
    # same rounding and jax.checkpoint as today.
    def previous_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        key_data = jax.random.key_data(key)
        key_words = (key_data[0], key_data[1])
        flat_index = _random._keyed_index(key_words[1], shape, None, len(shape))
        word0, word1 = _random._threefry2x32(key_words, (key_words[0], flat_index), 20)
        return word0 ^ word1

    def previous(key: jax.Array, x: jax.Array) -> jax.Array:
        def apply(key: jax.Array, x: jax.Array) -> jax.Array:
            kept = previous_bits(key, x.shape) >= previous_threshold
            scaled = (x.astype(jnp.float32) / np.float32(keep_prob)).astype(x.dtype)
            return jnp.where(kept, scaled, jnp.zeros((), x.dtype))

        return jax.checkpoint(apply)(key, x)

    def previous_noise(key: jax.Array, x: jax.Array) -> jax.Array:
        def apply(key: jax.Array, x: jax.Array) -> jax.Array:
            mantissa = (previous_bits(key, x.shape) >> np.uint32(9)) | np.uint32(0x3F800000)
            unit = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1
            low = np.nextafter(np.float32(-1), np.float32(0))
            uniform = jnp.maximum(low, unit * (np.float32(1) - low) + low)
            eps = np.float32(math.sqrt(2)) * jax.lax.erf_inv(uniform)
            return (x.astype(jnp.float32) * (1 + sigma * eps)).astype(x.dtype)

        return jax.checkpoint(apply)(key, x)

    linen_module = nn.Dropout(rate, deterministic=False)
    nnx_module = nnx.Dropout(rate, deterministic=False)
    return {
        FLOOR: lambda key, x: x * 2,
        DROPOUTX: lambda key, x: dx.dropout(key, x, rate),
        PREVIOUS: previous,
        GAUSSIAN: lambda key, x: dx.gaussian_dropout(key, x, rate),
        PREVIOUS_NOISE: previous_noise,
        LINEN: lambda key, x: linen_module.apply({}, x, rngs={"dropout": key}),
        NNX: lambda key, x: nnx_module(x, rngs=key),
        BERNOULLI: lambda key, x: jnp.where(
            jax.random.bernoulli(key, keep_prob, x.shape), x / keep_prob, 0
        ),
    }


def jax_step(layer: Layer, mode: str, key: jax.Array, x: jax.Array, w: jax.Array) -> Step:
    """One blocking call of ``layer``'s forward, gradient or split-VJP pass."""
    if mode == "forward":
        forward = jax.jit(layer)
        return lambda: jax.block_until_ready(forward(key, x))
    if mode == "gradient":
        gradient = jax.jit(
            jax.grad(lambda x, key, w: jnp.sum(layer(key, x) * w, dtype=jnp.float32))
        )
        return lambda: jax.block_until_ready(gradient(x, key, w))
    vjp_forward = jax.jit(lambda key, x: jax.vjp(functools.partial(layer, key), x))
    vjp_backward = jax.jit(lambda vjp_fn, cotangent: vjp_fn(cotangent)[0])

    def split_vjp() -> object:
        y, vjp_fn = vjp_forward(key, x)
        return jax.block_until_ready((y, vjp_backward(vjp_fn, w)))

    return split_vjp


def torch_step(
    torch: ModuleType, mode: str, rate: float, shape: tuple[int, int], dtype: str
) -> Step:
    """The PyTorch counterpart of :func:`jax_step`: eager ``F.dropout``, autograd."""
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    x = torch.randn(shape, dtype=torch_dtype, device=device, requires_grad=True)
    w = torch.randn(shape, dtype=torch_dtype, device=device)
    dropout = functools.partial(torch.nn.functional.dropout, p=rate, training=True)
    synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None

    def step() -> object:
        if mode == "forward":
            with torch.no_grad():
                result = dropout(x)
        elif mode == "gradient":
            (result,) = torch.autograd.grad((dropout(x) * w).sum(), x)
        else:
            (result,) = torch.autograd.grad(dropout(x), x, grad_outputs=w)
        synchronize()
        return result

    return step


def median_times_ms(steps: Mapping[str, Step], *, repeats: int, warmup: int) -> dict[str, float]:
    """The median wall time of each step in milliseconds.

    Every step is first called ``warmup`` times (compiling it), then the steps
    are called in turn, one round after another, ``repeats`` rounds in all.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def describe_residuals(avals: Sequence[Any]) -> str:
    """``bool[4096,4096], float32[4096,4096], 3 scalars``: what is saved."""
    arrays = [str(aval) for aval in avals if aval.shape]
    scalars = len(avals) - len(arrays)
    if scalars:
        arrays.append(f"{scalars} scalar" + ("s" if scalars > 1 else ""))
    return ", ".join(arrays) or "nothing"


def residual(layer: Layer, shape: tuple[int, int], dtype: jnp.dtype) -> tuple[float, str]:
    """Bytes per element of ``x`` that ``layer`` saves for its VJP w.r.t. ``x``."""
    key = jax.random.key(0)
    x = jax.ShapeDtypeStruct(shape, dtype)
    avals = [aval for aval, _ in saved_residuals(lambda x: layer(key, x), x)]
    total = sum(
        aval.size * aval.dtype.itemsize for aval in avals if isinstance(aval, jax.core.ShapedArray)
    )
    return total / (shape[0] * shape[1]), describe_residuals(avals)


def scan_loss(layer: Layer) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``sum(h_L)`` of the model ``h = layer(key_l, tanh(h @ W_l))``, scanned over ``l``."""

    def loss(weights: jax.Array, h: jax.Array, keys: jax.Array) -> jax.Array:
        def body(
            h: jax.Array, weight_and_key: tuple[jax.Array, jax.Array]
        ) -> tuple[jax.Array, None]:
            weight, key = weight_and_key
            return layer(key, jnp.tanh(h @ weight)), None

        h, _ = jax.lax.scan(body, h, (weights, keys))
        return jnp.sum(h, dtype=jnp.float32)

    return loss


def scan_temp_bytes(layer: Layer, shape: tuple[int, int], dtype: jnp.dtype, layers: int) -> int:
    """Compiled temp memory of the gradient of :func:`scan_loss` w.r.t. weights and input."""
    width = shape[1]
    weights = jax.ShapeDtypeStruct((layers, width, width), dtype)
    h = jax.ShapeDtypeStruct(shape, dtype)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), layers))
    gradient = jax.jit(jax.grad(scan_loss(layer), argnums=(0, 1)))
    stats = gradient.lower(weights, h, keys).compile().memory_analysis()
    if stats is None:
        raise RuntimeError(f"no memory analysis on backend {jax.default_backend()!r}")
    return stats.temp_size_in_bytes


def scan_memory(
    layers: Mapping[str, Layer], shape: tuple[int, int], dtype: jnp.dtype
) -> list[ScanMemory]:
    """Temp memory that each layer adds to the scanned model, over the identity.

    Measured with :data:`SCAN_LAYERS` layers and again with twice as many; the
    difference gives what each further layer adds.
    """

    def identity(key: jax.Array, x: jax.Array) -> jax.Array:
        return x

    def temp(layer: Layer, depth: int) -> int:
        return scan_temp_bytes(layer, shape, dtype, depth)

    baseline = {depth: temp(identity, depth) for depth in (SCAN_LAYERS, 2 * SCAN_LAYERS)}
    results = []
    for method, layer in layers.items():
        added = {depth: temp(layer, depth) - baseline[depth] for depth in baseline}
        per_layer = (added[2 * SCAN_LAYERS] - added[SCAN_LAYERS]) / SCAN_LAYERS
        temp_bytes = added[SCAN_LAYERS] + baseline[SCAN_LAYERS]
        results.append(
            ScanMemory(shape, str(dtype), method, temp_bytes, added[SCAN_LAYERS], per_layer)
        )
    return results


def import_torch() -> ModuleType | None:
    """PyTorch if it can be imported, else ``None``."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def measure(
    config: Config, torch: ModuleType | None
) -> tuple[list[Timing], list[Residual], list[ScanMemory]]:
    """Runs every measurement for every shape and dtype."""
    layers = jax_layers(RATE)
    dropout_layers = {name: layer for name, layer in layers.items() if name != FLOOR}
    timings, residuals, scans = [], [], []
    key = jax.random.key(0)
    for shape in config.shapes:
        for dtype in config.dtypes:
            dtype_name = jnp.dtype(dtype).name
            x_key, w_key = jax.random.split(jax.random.key(1))
            x = jax.random.normal(x_key, shape, dtype)
            w = jax.random.normal(w_key, shape, dtype)
            for mode in MODES:
                print(f"timing {mode} {dtype_name}{list(shape)}", file=sys.stderr, flush=True)
                step_groups = [{name: jax_step(f, mode, key, x, w) for name, f in layers.items()}]
                if torch is not None:
                    # Timed apart: PyTorch's OpenMP threads spin after each op
                    # and would slow whichever JAX step ran next.
                    step_groups.append({TORCH: torch_step(torch, mode, RATE, shape, dtype_name)})
                for steps in step_groups:
                    medians = median_times_ms(steps, repeats=config.repeats, warmup=config.warmup)
                    timings += [Timing(shape, dtype_name, mode, m, ms) for m, ms in medians.items()]
            for method, layer in dropout_layers.items():
                per_element, saved = residual(layer, shape, dtype)
                residuals.append(Residual(shape, dtype_name, method, per_element, saved))
            print(f"compiling scan {dtype_name}{list(shape)}", file=sys.stderr, flush=True)
            scans += scan_memory(dropout_layers, shape, dtype)
    return timings, residuals, scans


def find(records: Iterable[Any], **fields: Any) -> Any:
    """The one record whose attributes equal ``fields``."""
    (match,) = [r for r in records if all(getattr(r, k) == v for k, v in fields.items())]
    return match


def check_targets(
    config: Config,
    timings: list[Timing],
    residuals: list[Residual],
    scans: list[ScanMemory],
) -> list[Check]:
    """The targets of issue 4.

    Speed is checked at float32 and the largest shape; residual and scan memory
    at every shape and dtype (the worst case is reported).
    """
    where = {"shape": config.target_shape, "dtype": "float32"}
    label = f"float32{list(config.target_shape)}, rate {RATE}"

    def ms(mode: str, method: str) -> float:
        return find(timings, mode=mode, method=method, **where).ms

    forward_speedup = ms("forward", LINEN) / ms("forward", DROPOUTX)
    forward_vs_floor = ms("forward", DROPOUTX) / ms("forward", FLOOR)
    gradient_speedup = ms("gradient", LINEN) / ms("gradient", DROPOUTX)
    # Issue 11 is about the mask generator, which bounds the time where the
    # array sits in cache: the smallest shape (1024x1024 in a full run).
    small = min(config.shapes, key=lambda shape: shape[0] * shape[1])

    def small_ms(method: str, dtype: str) -> float:
        return find(timings, mode="forward", method=method, shape=small, dtype=dtype).ms

    dtypes = ("float32", "bfloat16")
    small_vs_floor = {dtype: small_ms(DROPOUTX, dtype) / small_ms(FLOOR, dtype) for dtype in dtypes}

    # The generator's cost: forward time above the copy floor, previous over now.
    def gain(previous: str, now: str) -> dict[str, float]:
        return {
            dtype: (small_ms(previous, dtype) - small_ms(FLOOR, dtype))
            / (small_ms(now, dtype) - small_ms(FLOOR, dtype))
            for dtype in dtypes
        }

    generator_gain = gain(PREVIOUS, DROPOUTX)
    noise_gain = gain(PREVIOUS_NOISE, GAUSSIAN)
    worst_residual = max(
        (r for r in residuals if r.method == DROPOUTX), key=lambda r: r.bytes_per_element
    )
    scan_ratios = {
        f"{s.dtype}{list(s.shape)}": s.added_bytes
        / find(scans, shape=s.shape, dtype=s.dtype, method=LINEN).added_bytes
        for s in scans
        if s.method == DROPOUTX
    }
    worst_scan = max(scan_ratios, key=scan_ratios.__getitem__)
    return [
        Check(
            f"forward >= 5x faster than {LINEN} ({label})",
            forward_speedup >= 5,
            f"{forward_speedup:.2f}x",
        ),
        Check(
            f"forward within 2.5x of the copy floor ({label})",
            forward_vs_floor <= 2.5,
            f"{forward_vs_floor:.2f}x the floor",
        ),
        Check(
            "mask generation (forward time above the copy floor) >= 4x cheaper than the "
            f"previous generator ({list(small)}, float32 and bfloat16; issue 11)",
            min(generator_gain.values()) >= 4,
            ", ".join(f"{dtype} {gain:.2f}x" for dtype, gain in generator_gain.items()),
        ),
        Check(
            "noise generation (Gaussian dropout's forward time above the copy floor) >= 4x "
            f"cheaper than the previous noise ({list(small)}, float32 and bfloat16; issue 11)",
            min(noise_gain.values()) >= 4,
            ", ".join(f"{dtype} {gain:.2f}x" for dtype, gain in noise_gain.items()),
        ),
        Check(
            f"forward within 2x of the copy floor ({list(small)}, float32 and bfloat16; issue 11)",
            max(small_vs_floor.values()) <= 2,
            ", ".join(f"{dtype} {ratio:.2f}x" for dtype, ratio in small_vs_floor.items()),
        ),
        Check(
            f"gradient >= 5x faster than {LINEN} ({label})",
            gradient_speedup >= 5,
            f"{gradient_speedup:.2f}x",
        ),
        Check(
            "residual saved for backward <= 1 byte/element (every shape and dtype)",
            worst_residual.bytes_per_element <= 1,
            f"worst {worst_residual.bytes_per_element:.6f} bytes/element, at "
            f"{worst_residual.dtype}{list(worst_residual.shape)}",
        ),
        Check(
            f"temp memory added to a {SCAN_LAYERS}-layer scan <= half of {LINEN}'s "
            "(every shape and dtype)",
            scan_ratios[worst_scan] <= 0.5,
            f"worst {scan_ratios[worst_scan]:.5f}x flax's, at {worst_scan}",
        ),
    ]


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` where there is one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(
    torch: ModuleType | None, config: Config, load_before: tuple[float, ...]
) -> list[tuple[str, str]]:
    """The machine, the versions and the settings, as label-value pairs.

    The load averages (1, 5 and 15 minutes) before and after the run show
    whether other processes competed for the machine.
    """

    def loads(values: tuple[float, ...]) -> str:
        return " / ".join(f"{value:.2f}" for value in values)

    usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        ("backend", jax.default_backend()),
        ("devices", ", ".join(f"{d} ({d.device_kind})" for d in jax.devices())),
        ("CPU", cpu_model()),
        ("CPU cores", f"{os.cpu_count()} ({usable_cores} usable by this process)"),
        ("load average before / after", f"{loads(load_before)}; {loads(os.getloadavg())}"),
        ("platform", platform.platform()),
        ("python", platform.python_version()),
        ("jax / jaxlib", f"{jax.__version__} / {jaxlib.__version__}"),
        ("flax", flax.__version__),
        ("numpy", np.__version__),
        ("dropoutx", dx.__version__),
        ("torch", torch.__version__ if torch is not None else "not installed (skipped)"),
        ("XLA_FLAGS", os.environ.get("XLA_FLAGS", "(unset)")),
        ("rate", str(RATE)),
        ("timing", f"median of {config.repeats} rounds after {config.warmup} warm-up calls"),
    ]


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (such cells are right-aligned)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; columns of numbers are right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    numeric = [bool(cells) and all(is_number(row[i]) for row in cells) for i in range(len(headers))]
    align = ["---:" if right else "---" for right in numeric]
    return "\n".join("| " + " | ".join(line) + " |" for line in [headers, align, *cells])


def shape_label(shape: tuple[int, int]) -> str:
    """``1024x1024``."""
    return "x".join(map(str, shape))


def timing_section(mode: str, timings: list[Timing]) -> str:
    """The timings of one pass, as time over the floor's and flax.linen's over time."""
    rows = []
    for t in (t for t in timings if t.mode == mode):
        same_case = {"shape": t.shape, "dtype": t.dtype, "mode": mode}
        floor = find(timings, method=FLOOR, **same_case).ms
        linen = find(timings, method=LINEN, **same_case).ms
        rows.append(
            (
                shape_label(t.shape),
                t.dtype,
                t.method,
                f"{t.ms:.3f}",
                f"{t.ms / floor:.2f}",
                f"{linen / t.ms:.2f}",
            )
        )
    headers = ("shape", "dtype", "method", "median ms", "time / floor", "flax.linen / time")
    return f"## {MODE_TITLES[mode]}\n\n" + markdown_table(headers, rows)


def residual_section(residuals: list[Residual]) -> str:
    """What one layer saves for its backward pass."""
    rows = (
        (shape_label(r.shape), r.dtype, r.method, f"{r.bytes_per_element:.6f}", r.saved)
        for r in residuals
    )
    headers = ("shape", "dtype", "method", "bytes / element", "saved")
    return "## Residuals saved for the backward pass of one layer\n\n" + markdown_table(
        headers, rows
    )


def scan_section(scans: list[ScanMemory]) -> str:
    """The temp memory that dropout adds to the scanned model."""
    rows = []
    for s in scans:
        linen_added = find(scans, shape=s.shape, dtype=s.dtype, method=LINEN).added_bytes
        elements = s.shape[0] * s.shape[1]
        rows.append(
            (
                shape_label(s.shape),
                s.dtype,
                s.method,
                f"{s.temp_bytes / 2**20:.1f}",
                f"{s.added_bytes / 2**20:.1f}",
                f"{s.added_bytes / elements:.1f}",
                f"{s.added_per_layer_bytes / elements:.2f}",
                f"{s.added_bytes / linen_added:.5f}",
            )
        )
    headers = (
        "shape",
        "dtype",
        "method",
        "temp MiB",
        "added MiB",
        "added bytes / element of h",
        "added per further layer, bytes / element",
        "added / flax.linen added",
    )
    return (
        f"## Temp memory of the gradient of a {SCAN_LAYERS}-layer `lax.scan` model\n\n"
        "`h = dropout(key_l, tanh(h @ W_l))`, gradient w.r.t. `W` and `h_0`; `h` has the "
        "shape shown.\n\n" + markdown_table(headers, rows)
    )


def report(
    config: Config,
    torch: ModuleType | None,
    timings: list[Timing],
    residuals: list[Residual],
    scans: list[ScanMemory],
    checks: list[Check],
    load_before: tuple[float, ...],
) -> str:
    """The results as markdown: machine, timings, residuals, scan memory, targets."""
    sections = [
        "## Machine\n\n" + markdown_table(("", "value"), machine(torch, config, load_before)),
        *(timing_section(mode, timings) for mode in MODES),
        residual_section(residuals),
        scan_section(scans),
        "## Targets\n\n" + "\n".join(f"- {check.line}" for check in checks),
    ]
    return f"# dropoutx benchmark, {jax.default_backend()}\n\n" + "\n\n".join(sections) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: ``--quick``, ``--out``, ``--repeats``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the markdown (default: benchmarks/results-<backend>.md)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per pass")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; returns 0 if every target passes, else 1."""
    args = parse_args(argv)
    if args.quick:
        shapes, repeats, warmup = ((256, 256), (1024, 1024)), 5, 1
    else:
        shapes, repeats, warmup = ((1024, 1024), (4096, 4096)), 20, 3
    config = Config(
        shapes=shapes,
        dtypes=(jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)),
        repeats=args.repeats or repeats,
        warmup=warmup,
    )
    torch = import_torch()
    load_before = os.getloadavg()
    timings, residuals, scans = measure(config, torch)
    checks = check_targets(config, timings, residuals, scans)
    markdown = report(config, torch, timings, residuals, scans, checks, load_before)
    out = args.out or Path(__file__).parent / f"results-{jax.default_backend()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    print(markdown)
    for check in checks:
        print(check.line)
    print(f"wrote {out}", file=sys.stderr)
    return 0 if all(check.passed for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
