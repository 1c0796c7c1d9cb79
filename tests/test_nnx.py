"""Tests for the Flax NNX modules, ``dropoutx.nnx``.

What they prove: ``dxn.Dropout`` is a drop-in for ``flax.nnx.Dropout`` (same
state, so the same params around it, the same inference outputs, the same
``train()`` / ``eval()`` / ``nnx.view`` behaviour and the same error types);
every module (the whole family, DropConnectLinear included) equals the
functional transform applied with the key the module draws (from its forked
stream or from ``rngs=``), eagerly and under ``nnx.jit``, ``nnx.vmap``,
``nnx.scan`` and ``nnx.remat``; every module trains an MLP and a CNN with one
compilation; like Flax's, a module at a concrete rate of 0 or 1 needs no rngs;
``AnnealedDropout`` counts its steps as state that survives save and restore;
the Gaussian modules have the right mean and variance; missing flags and keys
give errors that name the fix.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, cast

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dropoutx as dx
from dropoutx import nnx as dxn

RATE = 0.3
STDDEV = 0.5
SCHEDULE = optax.linear_schedule(0.5, 0.0, transition_steps=16)
KINDS = (
    "Dropout",
    "VanillaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "AnnealedDropout",
    "AlphaDropout",
    "DropPath",
    "DropConnectLinear",
)
# Inside a transform these may differ from the reference by an ulp (see assert_same).
INEXACT_WHEN_TRACED = ("GaussianDropout", "GaussianNoise", "DropConnectLinear")
# The kinds with a broadcast_dims argument.
BROADCASTING = ("Dropout", "VanillaDropout", "GaussianDropout", "AnnealedDropout", "AlphaDropout")
# The kinds with a concrete drop rate, which need no key at rate 0 or 1.
RATE_KINDS = ("Dropout", "VanillaDropout", "AlphaDropout", "DropPath", "DropConnectLinear")
FUNCTIONS = {
    "Dropout": dx.inverted_dropout,
    "VanillaDropout": dx.vanilla_dropout,
    "GaussianDropout": dx.gaussian_dropout,
    "AlphaDropout": dx.alpha_dropout,
}


def fixed_kernel(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """DropConnectLinear's kernel in these tests: fixed, so the reference can rebuild it."""
    del key
    return jax.random.normal(jax.random.key(42), shape, dtype) / math.sqrt(shape[0])


def streams(**seeds: int) -> nnx.Rngs:
    """``nnx.Rngs(**seeds)`` plus a 'params' stream, from which DropConnectLinear draws."""
    return nnx.Rngs(params=0, **seeds)


def make_layer(kind: str, features: int = 5, rate: float = RATE, **kwargs: Any) -> nnx.Module:
    """A dxn module of ``kind`` with the test's rate, stddev or schedule.

    DropConnectLinear keeps the feature count (``features``, the input's last
    axis), so it can stand wherever a noise layer does; without ``rngs`` it
    gets a 'params' stream only, and so takes its keys at call time.
    """
    if kind not in BROADCASTING:
        kwargs.pop("broadcast_dims", None)
    if kind == "GaussianNoise":
        return dxn.GaussianNoise(STDDEV, **kwargs)
    if kind == "AnnealedDropout":
        return dxn.AnnealedDropout(SCHEDULE, **kwargs)
    if kind == "DropConnectLinear":
        kwargs.setdefault("rngs", nnx.Rngs(params=0))
        return dxn.DropConnectLinear(features, features, rate, kernel_init=fixed_kernel, **kwargs)
    return cast(nnx.Module, getattr(dxn, kind)(rate, **kwargs))


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel + 0``: what DropConnectLinear computes with its zero-initialised bias."""
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.zeros(kernel.shape[-1:], y.dtype)


def reference(
    kind: str,
    key: Any,
    x: jax.Array,
    step: Any = 0,
    broadcast_dims: tuple[int, ...] = (),
    rate: float = RATE,
) -> jax.Array:
    """The functional transform that ``make_layer(kind)`` must reproduce while training."""
    if kind in FUNCTIONS:
        return FUNCTIONS[kind](key, x, rate, broadcast_dims=broadcast_dims)
    if kind == "GaussianNoise":
        return dx.gaussian_noise(key, x, STDDEV)
    if kind == "DropPath":
        return dx.drop_path(key, x, rate)
    if kind == "DropConnectLinear":
        kernel = fixed_kernel(None, (x.shape[-1], x.shape[-1]))
        return dense(x, dx.inverted_dropout(key, kernel, rate))
    return dx.annealed_dropout(key, x, step, SCHEDULE, broadcast_dims=broadcast_dims)


def inference(kind: str, x: jax.Array) -> jax.Array:
    """What a ``kind`` module computes at inference."""
    if kind == "VanillaDropout":
        return x * (1 - RATE)
    if kind == "DropConnectLinear":
        return dense(x, fixed_kernel(None, (x.shape[-1], x.shape[-1])))
    return x


def step_kwargs(kind: str, step: Any = 0) -> dict[str, Any]:
    """An explicit call-time step, accepted by AnnealedDropout only."""
    return {"step": step} if kind == "AnnealedDropout" else {}


def assert_same(kind: str, actual: jax.Array, expected: jax.Array, *, traced: bool) -> None:
    """Exact equality, except for the Gaussian kinds and DropConnect inside a transform.

    Inside an outer jit, XLA fuses ``x + stddev * eps`` (or ``x * (1 + ...)``)
    into the surrounding computation and may contract it into a fused
    multiply-add, which moves some outputs by one float32 ulp; a matmul there
    (DropConnect) may sum in another order. The other kinds only select,
    scale and add a constant, so they match bit for bit everywhere.
    """
    if traced and kind in INEXACT_WHEN_TRACED:
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    else:
        chex.assert_trees_all_equal(actual, expected)


class KeyProbe(nnx.Module):
    """Holds the stream a layer built from the same rngs holds; returns its next key."""

    def __init__(self, rngs: nnx.Rngs, rng_collection: str = "dropout") -> None:
        self.rngs = rngs[rng_collection].fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.rngs()


def inputs(shape: tuple[int, ...] = (4, 6, 5), seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape) + 2.0


def plain(state: nnx.State) -> Any:
    """A state as nested dicts of arrays, PRNG keys replaced by their key data."""

    def leaf(value: Any) -> Any:
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(value)
        return value

    return jax.tree.map(leaf, nnx.to_pure_dict(state))


# --- drop-in replacement for flax.nnx.Dropout --------------------------------------


class DropoutMLP(nnx.Module):
    """An MLP whose dropout layers are ``dropout_cls``; parameters drawn around them."""

    def __init__(self, dropout_cls: Any, rngs: nnx.Rngs) -> None:
        self.linear1 = nnx.Linear(3, 16, rngs=rngs)
        self.dropout1 = dropout_cls(0.5, rngs=rngs)
        self.linear2 = nnx.Linear(16, 16, rngs=rngs)
        self.dropout2 = dropout_cls(0.25, broadcast_dims=(0,), rngs=rngs)
        self.linear3 = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.dropout1(nnx.relu(self.linear1(x)))
        x = self.dropout2(nnx.relu(self.linear2(x)))
        return self.linear3(x)


def test_drop_in_same_state_and_eval_outputs() -> None:
    x = inputs((8, 3))
    theirs = DropoutMLP(nnx.Dropout, nnx.Rngs(params=0, dropout=1))
    ours = DropoutMLP(dxn.Dropout, nnx.Rngs(params=0, dropout=1))
    # Same params, and the same forked rng streams (same keys, counts and paths).
    chex.assert_trees_all_equal(plain(nnx.state(theirs)), plain(nnx.state(ours)))
    chex.assert_trees_all_equal(
        jax.tree.map(type, nnx.state(theirs), is_leaf=lambda v: isinstance(v, nnx.Variable)),
        jax.tree.map(type, nnx.state(ours), is_leaf=lambda v: isinstance(v, nnx.Variable)),
    )
    # Training calls consume the streams exactly as Flax's do.
    theirs(x), ours(x)
    chex.assert_trees_all_equal(plain(nnx.state(theirs)), plain(nnx.state(ours)))
    theirs.eval(), ours.eval()
    chex.assert_trees_all_equal(theirs(x), ours(x))
    ours.train()
    assert not bool((ours(x) == theirs(x)).all())


def test_train_eval_and_view_set_the_flag() -> None:
    x = inputs((8, 3))
    model = DropoutMLP(dxn.Dropout, nnx.Rngs(0))
    assert model.dropout1.deterministic is False
    model.eval()
    assert model.dropout1.deterministic is True and model.dropout2.deterministic is True
    evaluated = model(x)
    model.train()
    assert model.dropout1.deterministic is False
    view = nnx.view(model, deterministic=True)
    assert view.dropout1.deterministic is True and model.dropout1.deterministic is False
    chex.assert_trees_all_equal(view(x), evaluated)
    # A view shares the variables: the training call advances the same stream.
    count = model.dropout1.rngs.count[...]
    nnx.view(model, deterministic=False)(x)
    assert model.dropout1.rngs.count[...] == count + 1
    assert "deterministic" in nnx.view_info(model)


def test_constructor_matches_flax() -> None:
    # The same names, order, kinds and defaults as flax.nnx.Dropout's __init__.
    def arguments(module_cls: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(module_cls.__init__).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    assert arguments(dxn.Dropout) == arguments(nnx.Dropout)


@pytest.mark.parametrize("module_cls", [nnx.Dropout, dxn.Dropout])
def test_zero_rate_needs_no_rngs_like_flax(module_cls: Any) -> None:
    x = inputs()
    assert (module_cls(0.0)(x) == x).all()


@pytest.mark.parametrize("module_cls", [nnx.Dropout, dxn.Dropout])
def test_unit_rate_needs_no_rngs_like_flax(module_cls: Any) -> None:
    x = inputs()
    chex.assert_trees_all_equal(module_cls(1.0)(x), jnp.zeros_like(x))


@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("kind", RATE_KINDS)
def test_concrete_rate_zero_or_one_draws_no_key(kind: str, rate: float) -> None:
    # The result is the transform's at that rate, which needs no random bits:
    # a module without rngs works, and a module's stream does not advance.
    x = inputs()
    expected = reference(kind, jax.random.key(0), x, rate=rate)
    chex.assert_trees_all_equal(make_layer(kind, rate=rate)(x), expected)
    layer = make_layer(kind, rate=rate, rngs=streams(dropout=0))
    chex.assert_trees_all_equal(layer(x), expected)
    assert layer.rngs.count[...] == 0
    # A concrete JAX scalar too (under nnx.jit it is traced, and draws a key).
    chex.assert_trees_all_equal(make_layer(kind, rate=jnp.float32(rate))(x), expected)


@pytest.mark.parametrize("module_cls", [nnx.Dropout, dxn.Dropout])
def test_error_types_match_flax(module_cls: Any) -> None:
    # No rngs while training: the error starts with flax.nnx.Dropout's sentence.
    no_rngs = (
        r"^`deterministic` is False, but no `rngs` argument was provided to Dropout\s+"
        r"as either a __call__ argument or class attribute\."
    )
    with pytest.raises(ValueError, match=no_rngs):
        module_cls(0.5)(inputs())
    with pytest.raises(ValueError):  # no deterministic anywhere
        module_cls(0.5, deterministic=None, rngs=nnx.Rngs(0))(inputs())
    with pytest.raises(TypeError):
        module_cls(0.5, rngs=0)


# --- every module: exact equality with the functional transform -----------------


@pytest.mark.parametrize("kind", KINDS)
def test_call_time_key_equals_functional_call(kind: str) -> None:
    x, key = inputs(), jax.random.key(7)
    dims = () if kind == "GaussianNoise" else (1,)
    layer = make_layer(kind, broadcast_dims=dims)
    chex.assert_trees_all_equal(layer(x, rngs=key), reference(kind, key, x, 0, dims))
    raw = jax.random.PRNGKey(7)  # a raw uint32[2] key works too
    y = layer(x, rngs=raw, **step_kwargs(kind))
    chex.assert_trees_all_equal(y, reference(kind, raw, x, 0, dims))


@pytest.mark.parametrize("kind", KINDS)
def test_call_time_rngs_and_stream_override(kind: str) -> None:
    x = inputs()
    layer = make_layer(kind, rng_collection="noise", rngs=streams(noise=1))
    expected_key = nnx.Rngs(noise=5).noise()
    y = layer(x, rngs=nnx.Rngs(noise=5))
    chex.assert_trees_all_equal(y, reference(kind, expected_key, x))
    y = layer(x, rngs=nnx.Rngs(noise=5).noise, **step_kwargs(kind))
    chex.assert_trees_all_equal(y, reference(kind, expected_key, x))


@pytest.mark.parametrize("kind", KINDS)
def test_constructor_rngs_fork_a_stream(kind: str) -> None:
    x = inputs()
    layer = make_layer(kind, rngs=streams(dropout=3))
    probe = KeyProbe(nnx.Rngs(dropout=3))
    for step in range(2):  # the stream advances: a new key per call
        assert_same(kind, layer(x), reference(kind, probe(x), x, step), traced=False)
    if kind == "DropConnectLinear":
        return  # it takes an nnx.Rngs only, since it draws its parameters from it
    stream_layer = make_layer(kind, rngs=nnx.Rngs(dropout=3).dropout)
    stream_probe = KeyProbe(nnx.Rngs(dropout=3))
    assert_same(kind, stream_layer(x), reference(kind, stream_probe(x), x), traced=False)


@pytest.mark.parametrize("kind", KINDS)
def test_inference_mode(kind: str) -> None:
    x = inputs()
    layer = make_layer(kind, deterministic=True)  # needs no rngs
    expected = inference(kind, x)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)
    layer.train()
    assert layer(x, rngs=jax.random.key(0)).shape == x.shape
    np.testing.assert_allclose(layer(x, deterministic=True), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_preserved(dtype: Any) -> None:
    x = inputs().astype(dtype)
    y = dxn.Dropout(0.5)(x, rngs=jax.random.key(0))
    assert y.dtype == dtype
    chex.assert_trees_all_equal(y, dx.dropout(jax.random.key(0), x, 0.5))


def test_array_rate_is_state_and_does_not_recompile() -> None:
    x = inputs()
    traces = []

    @nnx.jit
    def apply(layer: dxn.Dropout, key: jax.Array) -> jax.Array:
        traces.append(key)
        return layer(x, rngs=key)

    key = jax.random.key(0)
    for rate in (0.1, 0.5, 0.9):
        layer = dxn.Dropout(jnp.float32(rate))
        expected = jax.jit(lambda r: dx.dropout(key, x, r))(jnp.float32(rate))
        chex.assert_trees_all_equal(apply(layer, key), expected)
    assert len(traces) == 1


# --- NNX transforms ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_jit_advances_the_stream(kind: str) -> None:
    x = inputs()
    layer = make_layer(kind, rngs=streams(dropout=3))
    probe = KeyProbe(nnx.Rngs(dropout=3))
    apply = nnx.jit(lambda layer, x: layer(x))
    for step in range(3):
        assert_same(kind, apply(layer, x), reference(kind, probe(x), x, step), traced=True)


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_remat(kind: str) -> None:
    x = inputs()
    layer = make_layer(kind, rngs=streams(dropout=3))
    probe = KeyProbe(nnx.Rngs(dropout=3))

    @nnx.remat
    def apply(layer: nnx.Module, x: jax.Array) -> jax.Array:
        return layer(x)

    for step in range(2):
        assert_same(kind, apply(layer, x), reference(kind, probe(x), x, step), traced=True)


def test_nnx_remat_gradient_is_mask_over_keep() -> None:
    x, key = inputs(), jax.random.key(2)
    layer = dxn.Dropout(RATE)

    @nnx.remat
    def loss(layer: dxn.Dropout, x: jax.Array) -> jax.Array:
        return layer(x, rngs=key).sum()

    grad = jax.grad(lambda x: loss(layer, x))(x)
    kept = dx.keep_mask(key, x.shape, RATE)
    np.testing.assert_allclose(grad, jnp.where(kept, 1 / (1 - RATE), 0), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_vmap_split_rngs(kind: str) -> None:
    # One key per example: split the module's stream over the batch.
    x = inputs((6, 40))

    def per_example(module: nnx.Module) -> Any:
        state_axes = nnx.StateAxes({nnx.RngState: 0, ...: None})  # type: ignore[arg-type]

        @nnx.split_rngs(splits=6)
        @nnx.vmap(in_axes=(state_axes, 0))
        def apply(module: nnx.Module, row: jax.Array) -> jax.Array:
            return module(row)

        return apply(module, x)

    layer = make_layer(kind, x.shape[-1], rngs=streams(dropout=3))
    y = per_example(layer)
    keys = per_example(KeyProbe(nnx.Rngs(dropout=3)))
    assert keys.shape == (6,)
    expected = jax.vmap(lambda k, row: reference(kind, k, row))(keys, x)
    assert_same(kind, y, expected, traced=True)
    assert not bool((y[0] / x[0] == y[1] / x[1]).all())
    if isinstance(layer, dxn.AnnealedDropout):  # the broadcast counter advanced once
        assert layer.step[...] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_call_time_key_under_nnx_vmap(kind: str) -> None:
    x, keys = inputs((6, 40)), jax.random.split(jax.random.key(4), 6)
    layer = make_layer(kind, x.shape[-1])
    y = nnx.vmap(
        lambda layer, row, key: layer(row, rngs=key, **step_kwargs(kind)), in_axes=(None, 0, 0)
    )(layer, x, keys)
    expected = jax.vmap(lambda k, row: reference(kind, k, row))(keys, x)
    assert_same(kind, y, expected, traced=True)


class Block(nnx.Module):
    """A scanned layer: just the noise layer, or a probe returning its key."""

    def __init__(self, kind: str, probe: bool, rngs: nnx.Rngs) -> None:
        self.layer = KeyProbe(rngs) if probe else make_layer(kind, rngs=rngs)
        self.probe = probe

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = self.layer(x)
        return (x, out) if self.probe else (out, out)


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_scan_over_stacked_layers(kind: str) -> None:
    x, depth = inputs(), 3

    def build_and_run(probe: bool) -> Any:
        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs: nnx.Rngs) -> Block:
            return Block(kind, probe, rngs)

        blocks = create(streams(dropout=8))

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def forward(x: jax.Array, block: Block) -> tuple[jax.Array, jax.Array]:
            return block(x)

        return blocks, forward(x, blocks)[1]

    blocks, ys = build_and_run(probe=False)
    _, keys = build_and_run(probe=True)
    assert keys.shape == (depth,)
    carry = x
    for i in range(depth):
        assert_same(kind, ys[i], reference(kind, keys[i], carry), traced=True)
        carry = ys[i]
    if kind == "AnnealedDropout":  # one counter per stacked layer, each advanced
        chex.assert_trees_all_equal(blocks.layer.step[...], jnp.ones(depth, jnp.int32))


# --- AnnealedDropout: the step counter is state -------------------------------


class AnnealedMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(4, 64, rngs=rngs)
        self.dropout = dxn.AnnealedDropout(SCHEDULE, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dropout(self.linear(x))


def test_annealed_step_counter_round_trip_and_one_compile() -> None:
    x = inputs((8, 4))
    model = AnnealedMLP(nnx.Rngs(0))
    traces = []

    @nnx.jit
    def forward(model: AnnealedMLP, x: jax.Array) -> jax.Array:
        traces.append(x)
        return model(x)

    zero_fractions = []
    for _ in range(12):
        zero_fractions.append(float((forward(model, x) == 0).mean()))
    assert model.dropout.step[...] == 12 and model.dropout.step[...].dtype == jnp.int32
    # The traced step changes the rate without recompiling: 0.5 at step 0,
    # 0.156 at step 11 (512 units: each fraction is within 0.15 of its rate).
    assert zero_fractions[0] > 0.35 and zero_fractions[-1] < 0.3

    # The counter is a BatchStat: saved with the state, not a parameter.
    assert "step" in nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))["dropout"]
    assert "dropout" not in nnx.to_pure_dict(nnx.state(model, nnx.Param))

    # Restore into a fresh model with nnx.update: the step (and rng) continue.
    fresh = AnnealedMLP(nnx.Rngs(1))
    assert fresh.dropout.step[...] == 0
    nnx.update(fresh, nnx.state(model))
    assert fresh.dropout.step[...] == 12
    chex.assert_trees_all_equal(forward(fresh, x), forward(model, x))
    assert fresh.dropout.step[...] == 13 and model.dropout.step[...] == 13

    # And with nnx.split / nnx.merge.
    graphdef, state = nnx.split(model)
    restored = nnx.merge(graphdef, state)
    assert restored.dropout.step[...] == 13
    for _ in range(3):
        forward(restored, x)
    # Step 16: the schedule has reached rate 0, so the layer is the identity.
    chex.assert_trees_all_equal(forward(restored, x), restored.linear(x))
    assert restored.dropout.step[...] == 17
    assert len(traces) == 1


def test_annealed_linear_schedule_end_under_jit() -> None:
    # Under jit the schedule ends at -7.5e-9, a rounding error that
    # annealed_dropout absorbs: the layer is then exactly the identity.
    x = inputs()
    layer = dxn.AnnealedDropout(optax.linear_schedule(0.5, 0.0, 20), rngs=nnx.Rngs(0))
    y = nnx.jit(lambda layer, x, step: layer(x, step=step))(layer, x, jnp.int32(20))
    chex.assert_trees_all_equal(y, x)


def test_annealed_eval_does_not_advance() -> None:
    x = inputs((8, 4))
    model = AnnealedMLP(nnx.Rngs(0))
    model(x)
    model.eval()
    model(x)
    assert model.dropout.step[...] == 1
    model.train()
    nnx.view(model, deterministic=True)(x)
    model.dropout(x, deterministic=True)
    assert model.dropout.step[...] == 1
    model(x)
    assert model.dropout.step[...] == 2


def test_annealed_step_override() -> None:
    x, key = inputs((16, 16)), jax.random.key(3)
    layer = dxn.AnnealedDropout(SCHEDULE, rngs=nnx.Rngs(0))
    for step in (0, 5, 19):
        y = layer(x, rngs=key, step=step)
        chex.assert_trees_all_equal(y, dx.annealed_dropout(key, x, step, SCHEDULE))
    chex.assert_trees_all_equal(layer(x, step=20), x)  # rate 0 at the end
    assert layer.step[...] == 0  # an explicit step leaves the counter alone
    layer(x, rngs=key)
    assert layer.step[...] == 1


# --- training -----------------------------------------------------------------------


class TrainNet(nnx.Module):
    """A tiny MLP or CNN with one noise layer of ``kind`` (after SELU for AlphaDropout)."""

    def __init__(self, kind: str, conv: bool, rngs: nnx.Rngs) -> None:
        self.conv = conv
        self.activation = nnx.selu if kind == "AlphaDropout" else nnx.relu
        self.hidden: nnx.Module
        dims: tuple[int, ...] = ()
        if conv:
            self.hidden = nnx.Conv(1, 8, (3, 3), rngs=rngs)
            dims = (1, 2)  # channel dropout: one mask value per (example, channel)
        else:
            self.hidden = nnx.Linear(8, 32, rngs=rngs)
        self.noise = make_layer(kind, 8 if conv else 32, broadcast_dims=dims, rngs=rngs)
        self.out = nnx.Linear(8 if conv else 32, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.noise(self.activation(self.hidden(x)))
        if self.conv:
            x = x.mean(axis=(1, 2))
        return self.out(x)[:, 0]


def _data(conv: bool) -> tuple[jax.Array, jax.Array]:
    key_x, key_w = jax.random.split(jax.random.key(0))
    if conv:
        x = jax.random.normal(key_x, (32, 6, 6, 1))
        return x, jnp.tanh(x[:, 1:4, 1:4, 0].mean(axis=(1, 2)) * 3)
    x = jax.random.normal(key_x, (64, 8))
    return x, jnp.sin(x @ jax.random.normal(key_w, (8,)))


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "cnn"])
@pytest.mark.parametrize("kind", KINDS)
def test_training_reduces_loss_with_one_compile(kind: str, conv: bool) -> None:
    x, target = _data(conv)
    model = TrainNet(kind, conv, nnx.Rngs(params=1, dropout=2))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    traces: list[None] = []

    def loss_fn(model: TrainNet) -> jax.Array:
        return jnp.mean((model(x) - target) ** 2)

    @nnx.jit
    def train_step(model: TrainNet, optimizer: nnx.Optimizer) -> None:
        traces.append(None)  # runs once per trace, not per call
        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)

    eval_loss = nnx.jit(loss_fn)
    before = eval_loss(nnx.view(model, deterministic=True))
    # 80 steps: with dropout streams 0 to 5 every kind ends at or below 0.62
    # of the starting loss (40 steps left one DropConnect stream at 0.72).
    for _ in range(80):
        train_step(model, optimizer)
    model.eval()
    after = eval_loss(model)
    assert len(traces) == 1
    assert bool(jnp.isfinite(after)) and after < 0.7 * before, (before, after)
    if isinstance(model.noise, dxn.AnnealedDropout):
        assert model.noise.step[...] == 80


# --- statistics -------------------------------------------------------------------

N = 200_000


def _assert_moments(y: jax.Array, mean: float, variance: float) -> None:
    """Sample mean and variance within 6 sigma of their expectations.

    For n = 200,000 normal samples the sample mean has standard deviation
    sqrt(variance / n) and the sample variance ``variance * sqrt(2 / (n - 1))``
    (both nearly normal at this n). A correct implementation fails each 6-sigma
    check with probability about 2e-9, so the test's false-failure rate is
    far below 1e-4.
    """
    assert abs(float(y.mean()) - mean) < 6 * math.sqrt(variance / N)
    assert abs(float(y.var()) - variance) < 6 * variance * math.sqrt(2 / (N - 1))


def test_gaussian_dropout_moments() -> None:
    # y = 1 * (1 + sigma * eps), sigma**2 = rate / (1 - rate) = 3 / 7.
    layer = dxn.GaussianDropout(RATE, rngs=nnx.Rngs(dropout=21))
    _assert_moments(layer(jnp.ones((N,))), 1.0, RATE / (1 - RATE))


def test_gaussian_noise_moments() -> None:
    layer = dxn.GaussianNoise(STDDEV, rngs=nnx.Rngs(dropout=22))
    _assert_moments(layer(jnp.zeros((N,))), 0.0, STDDEV**2)


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_missing_deterministic_names_the_fix(kind: str) -> None:
    layer = make_layer(kind, deterministic=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"(?s)deterministic=True/False.*model.eval\(\).*nnx.view"):
        layer(inputs())


@pytest.mark.parametrize("kind", KINDS)
def test_missing_rngs_names_the_fix(kind: str) -> None:
    with pytest.raises(ValueError, match=r"(?s)rngs=nnx.Rngs\(dropout=0\).*model.eval\(\)"):
        make_layer(kind)(inputs())


def test_bad_rngs_type_names_the_module() -> None:
    with pytest.raises(TypeError, match=r"dropoutx.nnx.Dropout: rngs must be"):
        dxn.Dropout(0.5, rngs=jax.random.key(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"dropoutx.nnx.GaussianNoise: rngs must be"):
        dxn.GaussianNoise(0.5)(inputs(), rngs=3)  # type: ignore[arg-type]


def test_bad_arguments_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"dropoutx.nnx.Dropout: .*rate=1.5"):
        dxn.Dropout(1.5)
    with pytest.raises(ValueError, match=r"dropoutx.nnx.GaussianDropout"):
        dxn.GaussianDropout(1.0)
    with pytest.raises(ValueError, match=r"dropoutx.nnx.GaussianNoise: stddev"):
        dxn.GaussianNoise(-1.0)
    with pytest.raises(TypeError, match=r"dropoutx.nnx.AnnealedDropout: schedule"):
        dxn.AnnealedDropout(0.5)  # type: ignore[arg-type]
