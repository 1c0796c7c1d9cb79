"""What dropout costs a transformer's training step: Flax's against dropoutx's.

Run from the repository root::

    python benchmarks/transformer.py          # full size
    python benchmarks/transformer.py --quick  # a small model, for a smoke test

The markdown goes to stdout and to ``--out`` (default
``benchmarks/results-transformer-<backend>.md``).

The model is a pre-LN transformer encoder (Vaswani et al. 2017, with the layer
norm before each sub-layer as in GPT-2 and ViT): token embedding plus a learned
position embedding, ``layers`` blocks of ``x + Drop(Attention(LN(x)))`` and
``x + Drop(Dense(Drop(gelu(Dense(LN(x))))))``, a final layer norm and a
projection back to the vocabulary, trained with cross-entropy on random tokens.
Dropout sits where the original transformer and most codebases put it: on the
attention weights (inside the attention module), after the attention block,
inside the MLP and after the MLP, all at the same rate.

One training step is the forward pass, the backward pass and an AdamW update,
jitted as one program (``jax.jit`` for Linen, ``nnx.jit`` for NNX). Three
variants of the same model, in Linen and in NNX:

* **no dropout**: Flax's modules with every rate 0;
* **Flax dropout**: ``nn.Dropout`` / ``nnx.Dropout`` and Flax's own attention
  dropout (``flax.linen.MultiHeadDotProductAttention`` /
  ``flax.nnx.MultiHeadAttention`` with ``dropout_rate``);
* **dropoutx**: ``dxl.Dropout`` / ``dxn.Dropout`` and the same attention
  modules with ``attention_fn=dx.dot_product_attention``.

Every variant runs once per round, in an order shuffled each round. For each
it reports the median step time; the time overhead, the median over rounds of
its step time over the no-dropout step of the same framework in the same
round (and the middle half of those ratios, their spread); and the compiled
temporary memory of the step
(``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``),
also as the overhead over the no-dropout step.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jaxlib
import numpy as np
import optax
from flax import nnx

import dropoutx as dx
from dropoutx import linen as dxl
from dropoutx import nnx as dxn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import cpu_model, markdown_table

VARIANTS = ("no dropout", "Flax dropout", "dropoutx")
FRAMEWORKS = ("linen", "nnx")


@dataclasses.dataclass(frozen=True)
class Config:
    """The model's size, the batch and the number of timed rounds."""

    vocab: int = 1024
    d_model: int = 256
    heads: int = 4
    mlp: int = 1024
    layers: int = 4
    batch: int = 8
    length: int = 256
    rate: float = 0.1
    repeats: int = 7
    warmup: int = 2


QUICK = Config(vocab=128, d_model=64, heads=4, mlp=256, layers=2, batch=4, length=64, repeats=3)


def _rate(variant: str, config: Config) -> float:
    return 0.0 if variant == "no dropout" else config.rate


# --- Linen ----------------------------------------------------------------------


class LinenBlock(nn.Module):
    """A pre-LN encoder block with dropout in the four usual places."""

    config: Config
    variant: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        rate = _rate(self.variant, self.config)
        drop: Callable[..., nn.Module] = dxl.Dropout if self.variant == "dropoutx" else nn.Dropout
        attention_fn = (
            dx.dot_product_attention if self.variant == "dropoutx" else nn.dot_product_attention
        )
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.config.heads,
            dropout_rate=rate,
            deterministic=False,
            attention_fn=attention_fn,
        )(nn.LayerNorm()(x))
        x = x + drop(rate, deterministic=False)(h)
        h = nn.gelu(nn.Dense(self.config.mlp)(nn.LayerNorm()(x)))
        h = nn.Dense(self.config.d_model)(drop(rate, deterministic=False)(h))
        return x + drop(rate, deterministic=False)(h)


class LinenEncoder(nn.Module):
    """Embedding, ``layers`` blocks, final norm and the vocabulary projection."""

    config: Config
    variant: str

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        c = self.config
        x = nn.Embed(c.vocab, c.d_model)(tokens)
        x = x + self.param("position", nn.initializers.normal(0.02), (c.length, c.d_model))
        for _ in range(c.layers):
            x = LinenBlock(c, self.variant)(x)
        return nn.Dense(c.vocab)(nn.LayerNorm()(x))


def linen_step(variant: str, config: Config) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """A jitted training step of the Linen encoder and its arguments."""
    model = LinenEncoder(config, variant)
    tokens = jax.random.randint(jax.random.key(0), (config.batch, config.length), 0, config.vocab)
    params = model.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, tokens)
    optimizer = optax.adamw(1e-3)
    state = optimizer.init(params)

    def loss(params: Any, tokens: jax.Array, key: jax.Array) -> jax.Array:
        logits = model.apply(params, tokens, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    @jax.jit
    def step(params: Any, state: Any, tokens: jax.Array, key: jax.Array) -> Any:
        key, dropout_key = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, tokens, dropout_key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, key, value

    return step, (params, state, tokens, jax.random.key(3))


# --- NNX ------------------------------------------------------------------------


class NNXBlock(nnx.Module):
    """The Linen block's twin in NNX."""

    def __init__(self, config: Config, variant: str, rngs: nnx.Rngs) -> None:
        rate = _rate(variant, config)
        drop: Callable[..., nnx.Module] = dxn.Dropout if variant == "dropoutx" else nnx.Dropout
        attention_fn = (
            dx.dot_product_attention if variant == "dropoutx" else nnx.dot_product_attention
        )
        d = config.d_model
        self.norm1 = nnx.LayerNorm(d, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            config.heads,
            d,
            dropout_rate=rate,
            deterministic=False,
            decode=False,
            attention_fn=attention_fn,
            rngs=rngs,
        )
        self.drop1 = drop(rate, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, config.mlp, rngs=rngs)
        self.drop2 = drop(rate, rngs=rngs)
        self.down = nnx.Linear(config.mlp, d, rngs=rngs)
        self.drop3 = drop(rate, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.drop1(self.attention(self.norm1(x)))
        h = self.down(self.drop2(nnx.gelu(self.up(self.norm2(x)))))
        return x + self.drop3(h)


class NNXEncoder(nnx.Module):
    """The Linen encoder's twin in NNX."""

    def __init__(self, config: Config, variant: str, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(config.vocab, config.d_model, rngs=rngs)
        self.position = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (config.length, config.d_model))
        )
        self.blocks = nnx.List([NNXBlock(config, variant, rngs) for _ in range(config.layers)])
        self.norm = nnx.LayerNorm(config.d_model, rngs=rngs)
        self.head = nnx.Linear(config.d_model, config.vocab, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens) + self.position[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def nnx_step(variant: str, config: Config) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """A jitted (``nnx.jit``) training step of the NNX encoder and its arguments."""
    model = NNXEncoder(config, variant, nnx.Rngs(params=1, dropout=2))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    tokens = jax.random.randint(jax.random.key(0), (config.batch, config.length), 0, config.vocab)

    def loss(model: NNXEncoder, tokens: jax.Array) -> jax.Array:
        logits = model(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    @nnx.jit
    def step(model: NNXEncoder, optimizer: nnx.Optimizer, tokens: jax.Array) -> jax.Array:
        value, grads = nnx.value_and_grad(loss)(model, tokens)
        optimizer.update(model, grads)
        return value

    return step, (model, optimizer, tokens)


# --- measuring ------------------------------------------------------------------


def temp_bytes(step: Callable[..., Any], args: tuple[Any, ...]) -> int:
    """The compiled temporary memory of one training step, in bytes."""
    compiled = step.lower(*args).compile()  # type: ignore[attr-defined]
    return int(compiled.memory_analysis().temp_size_in_bytes)


def runner(framework: str, step: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[], None]:
    """One training step that returns when its work is done, carrying its state."""
    state = list(args)

    def run() -> None:
        if framework == "linen":
            params, opt_state, tokens, key = state
            params, opt_state, key, value = step(params, opt_state, tokens, key)
            state[:] = [params, opt_state, tokens, key]
        else:
            value = step(*state)
        jax.block_until_ready(value)

    return run


@dataclasses.dataclass(frozen=True)
class Result:
    """A variant's median step time, its time over the no-dropout step's per round, its memory."""

    ms: float
    ratios: tuple[float, ...]
    mib: float

    def overhead(self, quantile: float) -> float:
        """The per-round time ratio at ``quantile`` (0.5: the median), minus 1."""
        return float(np.quantile(self.ratios, quantile)) - 1


def measure(config: Config) -> dict[tuple[str, str], Result]:
    """``(framework, variant) -> Result``, timed in rounds of every variant in shuffled order.

    Each round runs every variant once, in an order shuffled per round (seeded),
    so that neither the load of other processes nor the variant that ran just
    before favours one of them. A variant's time is divided by the no-dropout
    step of the same framework in the same round: the ratio cancels the load,
    which moves by more than dropout costs over a run.
    """
    makers = {"linen": linen_step, "nnx": nnx_step}
    runs: dict[tuple[str, str], Callable[[], None]] = {}
    memory: dict[tuple[str, str], float] = {}
    for framework in FRAMEWORKS:
        for variant in VARIANTS:
            print(f"compiling {framework} / {variant}", file=sys.stderr)
            step, args = makers[framework](variant, config)
            memory[framework, variant] = temp_bytes(step, args) / 2**20
            runs[framework, variant] = runner(framework, step, args)
            for _ in range(config.warmup):
                runs[framework, variant]()
    samples: dict[tuple[str, str], list[float]] = {name: [] for name in runs}
    order = list(runs)
    shuffler = random.Random(0)
    for round_index in range(config.repeats):
        print(f"round {round_index + 1}/{config.repeats}", file=sys.stderr)
        shuffler.shuffle(order)
        for name in order:
            start = time.perf_counter()
            runs[name]()
            samples[name].append(1e3 * (time.perf_counter() - start))
    results = {}
    for framework, variant in runs:
        times, base = samples[framework, variant], samples[framework, "no dropout"]
        results[framework, variant] = Result(
            ms=statistics.median(times),
            ratios=tuple(t / b for t, b in zip(times, base, strict=True)),
            mib=memory[framework, variant],
        )
    return results


def machine(load_before: tuple[float, ...], config: Config) -> list[tuple[str, str]]:
    """The machine, the versions and the settings, as label-value pairs."""

    def loads(values: tuple[float, ...]) -> str:
        return " / ".join(f"{value:.2f}" for value in values)

    return [
        ("backend", jax.default_backend()),
        ("devices", ", ".join(f"{d} ({d.device_kind})" for d in jax.devices())),
        ("CPU", cpu_model()),
        ("CPU cores", str(os.cpu_count())),
        ("load average before / after", f"{loads(load_before)}; {loads(os.getloadavg())}"),
        ("platform", platform.platform()),
        ("jax / jaxlib / flax", f"{jax.__version__} / {jaxlib.__version__} / {flax.__version__}"),
        ("dropoutx", dx.__version__),
        (
            "timing",
            f"{config.repeats} rounds of every variant in shuffled order, "
            f"after {config.warmup} warm-up steps",
        ),
    ]


def report(config: Config, results: dict[tuple[str, str], Result], load: tuple[float, ...]) -> str:
    """The results as markdown: the machine, then one table per framework."""
    lines = [
        f"# Transformer training step: {config.layers} layers, d_model {config.d_model}, "
        f"{config.heads} heads, MLP {config.mlp}, batch {config.batch} x {config.length} "
        f"tokens, dropout {config.rate}",
        "",
        markdown_table(("", ""), machine(load, config)),
        "",
    ]
    for framework in FRAMEWORKS:
        base = results[framework, "no dropout"]
        rows = []
        for variant in VARIANTS:
            result = results[framework, variant]
            rows.append(
                (
                    variant,
                    f"{result.ms:.1f}",
                    f"{100 * result.overhead(0.5):+.1f}%",
                    f"{100 * result.overhead(0.25):+.1f}% to {100 * result.overhead(0.75):+.1f}%",
                    f"{result.mib:.1f}",
                    f"{100 * (result.mib / base.mib - 1):+.1f}%",
                )
            )
        title = "Linen (jax.jit)" if framework == "linen" else "NNX (nnx.jit)"
        lines += [
            f"## {title}",
            "",
            markdown_table(
                (
                    "variant",
                    "step ms",
                    "time overhead",
                    "middle half of rounds",
                    "temp MiB",
                    "memory overhead",
                ),
                rows,
            ),
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model, for a smoke test")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--out", type=Path, help="where to write the markdown")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.repeats:
        config = dataclasses.replace(config, repeats=args.repeats)
    load = os.getloadavg()
    text = report(config, measure(config), load)
    print(text)
    out = args.out or Path(__file__).parent / f"results-transformer-{jax.default_backend()}.md"
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
