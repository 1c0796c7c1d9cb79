"""Tests for the Flax Linen modules, ``dropoutx.linen``.

What they prove: ``dxl.Dropout`` is a drop-in for ``flax.linen.Dropout`` (same
params, same inference outputs, same ``merge_param`` rules, same error types);
every module (the whole family, DropConnectDense included) equals the
functional transform applied with the key the module draws (from ``rng=`` or
from ``make_rng``), eagerly and under ``nn.jit``, ``nn.vmap``, ``nn.scan`` and
``nn.remat``; every module trains an MLP and a CNN with one compilation for the
whole run; like Flax's, a module at a concrete rate of 0 or 1 needs no rng; the
Gaussian modules have the right mean and variance; missing flags and keys give
errors that name the fix.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, cast

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import errors

import dropoutx as dx
from dropoutx import linen as dxl

RATE = 0.3
STDDEV = 0.5
STEP = 10
SCHEDULE = optax.linear_schedule(0.5, 0.0, transition_steps=32)
KINDS = (
    "Dropout",
    "VanillaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "AnnealedDropout",
    "AlphaDropout",
    "DropPath",
    "DropConnectDense",
)
# The kinds with a broadcast_dims field.
BROADCASTING = ("Dropout", "VanillaDropout", "GaussianDropout", "AnnealedDropout", "AlphaDropout")
# The kinds with a concrete drop rate, which need no key at rate 0 or 1.
RATE_KINDS = ("Dropout", "VanillaDropout", "AlphaDropout", "DropPath", "DropConnectDense")
FUNCTIONS = {
    "Dropout": dx.inverted_dropout,
    "VanillaDropout": dx.vanilla_dropout,
    "GaussianDropout": dx.gaussian_dropout,
    "AlphaDropout": dx.alpha_dropout,
}


def fixed_kernel(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """DropConnectDense's kernel in these tests: fixed, so the reference can rebuild it."""
    del key
    return jax.random.normal(jax.random.key(42), shape, dtype) / math.sqrt(shape[0])


def layer_args(kind: str, features: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and fixed keyword fields of a ``kind`` module in these tests.

    DropConnectDense keeps the feature count (``features``, the input's last
    axis), so it can stand wherever a noise layer does.
    """
    if kind == "GaussianNoise":
        return (STDDEV,), {}
    if kind == "AnnealedDropout":
        return (SCHEDULE,), {}
    if kind == "DropConnectDense":
        return (features, RATE), {"kernel_init": fixed_kernel}
    return (RATE,), {}


def make_layer(kind: str, features: int = 5, **fields: Any) -> nn.Module:
    """A dxl module of ``kind`` with the test's rate, stddev or schedule."""
    if kind not in BROADCASTING:
        fields.pop("broadcast_dims", None)
    args, fixed = layer_args(kind, features)
    return cast(nn.Module, getattr(dxl, kind)(*args, **fixed, **fields))


def call_kwargs(kind: str, step: Any = STEP) -> dict[str, Any]:
    """Extra call-time arguments: AnnealedDropout needs the training step."""
    return {"step": step} if kind == "AnnealedDropout" else {}


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel + 0``: what DropConnectDense computes with its zero-initialised bias."""
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.zeros(kernel.shape[-1:], y.dtype)


def reference(
    kind: str, key: Any, x: jax.Array, broadcast_dims: tuple[int, ...] = (), rate: float = RATE
) -> jax.Array:
    """The functional transform that ``make_layer(kind)`` must reproduce while training."""
    if kind in FUNCTIONS:
        return FUNCTIONS[kind](key, x, rate, broadcast_dims=broadcast_dims)
    if kind == "GaussianNoise":
        return dx.gaussian_noise(key, x, STDDEV)
    if kind == "DropPath":
        return dx.drop_path(key, x, rate)
    if kind == "DropConnectDense":
        kernel = fixed_kernel(None, (x.shape[-1], x.shape[-1]))
        return dense(x, dx.inverted_dropout(key, kernel, rate))
    return dx.annealed_dropout(key, x, STEP, SCHEDULE, broadcast_dims=broadcast_dims)


def assert_same(kind: str, actual: jax.Array, expected: jax.Array, *, traced: bool) -> None:
    """Exact equality, except for the Gaussian kinds and DropConnect inside a transform.

    Inside an outer jit, XLA fuses ``x + stddev * eps`` (or ``x * (1 + ...)``)
    into the surrounding computation and may contract it into a fused
    multiply-add, which moves some outputs by one float32 ulp; a matmul there
    (DropConnect) may sum in another order. The other kinds only select,
    scale and add a constant, so they match bit for bit everywhere.
    """
    if traced and kind in ("GaussianDropout", "GaussianNoise", "DropConnectDense"):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    else:
        chex.assert_trees_all_equal(actual, expected)


def run(module: nn.Module, *args: Any, **kwargs: Any) -> jax.Array:
    """``module.apply(variables, *args, **kwargs)``.

    The noise layers have no variables (``{}``); a DropConnectDense, or a host
    of one, gets the variables its ``init`` with the same arguments gives.
    """
    variables: Any = {}
    if (
        isinstance(module, dxl.DropConnectDense)
        or getattr(module, "kind", "") == "DropConnectDense"
    ):
        options = {name: value for name, value in kwargs.items() if name != "rngs"}
        rngs = {"params": jax.random.key(0), **kwargs.get("rngs", {})}
        variables = module.init(rngs, *args, **options)
    return cast(jax.Array, module.apply(variables, *args, **kwargs))


def dims_for(kind: str, dims: tuple[int, ...]) -> tuple[int, ...]:
    return dims if kind in BROADCASTING else ()


class KeyProbe(nn.Module):
    """Returns the key ``make_rng`` gives at this module's path: the one a layer there draws."""

    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        return self.make_rng(self.rng_collection)


def inputs(shape: tuple[int, ...] = (4, 6, 5), seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape) + 2.0


# --- drop-in replacement for flax.linen.Dropout ------------------------------


class DropoutMLP(nn.Module):
    """An MLP using ``dropout_cls`` both ways Flax allows: field flag and call flag."""

    dropout_cls: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(nn.Dense(16)(x))
        x = self.dropout_cls(0.5, deterministic=not train)(x)
        x = nn.relu(nn.Dense(16)(x))
        x = self.dropout_cls(0.25, broadcast_dims=(0,))(x, deterministic=not train)
        return nn.Dense(2)(x)


@pytest.mark.parametrize("init_train", [False, True])
def test_drop_in_same_params_and_eval_outputs(init_train: bool) -> None:
    x = inputs((8, 3))
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    flax_model, ours = DropoutMLP(nn.Dropout), DropoutMLP(dxl.Dropout)
    flax_vars = flax_model.init(rngs, x, train=init_train)
    our_vars = ours.init(rngs, x, train=init_train)
    chex.assert_trees_all_equal_structs(flax_vars, our_vars)
    chex.assert_trees_all_equal(flax_vars, our_vars)
    chex.assert_trees_all_equal(
        flax_model.apply(flax_vars, x, train=False), ours.apply(our_vars, x, train=False)
    )


def test_drop_in_init_falls_back_to_params_rng_like_flax() -> None:
    # Flax's make_rng falls back to the 'params' rng when 'dropout' is absent.
    x = inputs((8, 3))
    flax_vars = DropoutMLP(nn.Dropout).init(jax.random.key(0), x, train=True)
    our_vars = DropoutMLP(dxl.Dropout).init(jax.random.key(0), x, train=True)
    chex.assert_trees_all_equal(flax_vars, our_vars)


def test_drop_in_training_output_has_flax_semantics() -> None:
    # Same mask distribution, not the same bits: every unit is 0 or x / keep.
    x = inputs((64, 32))
    y = run(dxl.Dropout(0.5), x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.5, rtol=1e-6)
    # 2048 units at keep 0.5: the kept count is within 6 sigma (6 * sqrt(512) = 136).
    assert abs(int(kept.sum()) - 1024) < 136


def test_fields_match_flax() -> None:
    # The same names, order, kinds and defaults, so positional calls agree too.
    def fields(module_cls: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(module_cls).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    assert fields(dxl.Dropout) == fields(nn.Dropout)


@pytest.mark.parametrize("module_cls", [nn.Dropout, dxl.Dropout])
def test_merge_param_rules_match_flax(module_cls: Any) -> None:
    # The errors start with flax.linen.merge_param's own sentences.
    x = inputs()
    missing = r'^Parameter "deterministic" must be passed to the constructor or at call time\.'
    with pytest.raises(ValueError, match=missing):
        run(module_cls(0.5), x)
    twice = r'^Parameter "deterministic" was passed to the constructor and at call time\. Should'
    with pytest.raises(ValueError, match=twice):
        run(module_cls(0.5, deterministic=True), x, deterministic=False)
    assert (run(module_cls(0.5, deterministic=True), x) == x).all()
    assert (run(module_cls(0.5), x, deterministic=True) == x).all()


@pytest.mark.parametrize("module_cls", [nn.Dropout, dxl.Dropout])
def test_zero_rate_needs_no_rng_like_flax(module_cls: Any) -> None:
    x = inputs()
    assert (run(module_cls(0.0), x, deterministic=False) == x).all()


@pytest.mark.parametrize("module_cls", [nn.Dropout, dxl.Dropout])
def test_unit_rate_needs_no_rng_like_flax(module_cls: Any) -> None:
    x = inputs()
    chex.assert_trees_all_equal(run(module_cls(1.0), x, deterministic=False), jnp.zeros_like(x))


@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("kind", RATE_KINDS)
def test_concrete_rate_zero_or_one_draws_no_key(kind: str, rate: float) -> None:
    # No 'dropout' rng: the module must not call make_rng. The result is the
    # transform's at that rate, which then needs no random bits.
    x = inputs()
    args, fixed = layer_args(kind, x.shape[-1])
    layer = getattr(dxl, kind)(*args[:-1], rate, **fixed, deterministic=False)
    expected = reference(kind, jax.random.key(0), x, rate=rate)
    chex.assert_trees_all_equal(run(layer, x), expected)
    chex.assert_trees_all_equal(run(layer, x, rng=jax.random.key(1)), expected)


@pytest.mark.parametrize("module_cls", [nn.Dropout, dxl.Dropout])
def test_missing_rng_raises_invalid_rng_error_like_flax(module_cls: Any) -> None:
    with pytest.raises(errors.InvalidRngError):
        run(module_cls(0.5), inputs(), deterministic=False)


# --- every module: exact equality with the functional transform --------------


@pytest.mark.parametrize("kind", KINDS)
def test_explicit_rng_equals_functional_call(kind: str) -> None:
    x, key = inputs(), jax.random.key(7)
    dims = dims_for(kind, (1,))
    layer = make_layer(kind, broadcast_dims=dims)
    # rng is the third positional argument, as in flax.linen.Dropout.
    y = run(layer, x, False, key, **call_kwargs(kind))
    chex.assert_trees_all_equal(y, reference(kind, key, x, dims))
    assert y.dtype == x.dtype and y.shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_make_rng_key_equals_functional_call(kind: str) -> None:
    x, rngs = inputs(), {"noise": jax.random.key(11)}
    key = run(KeyProbe("noise"), x, rngs=rngs)
    layer = make_layer(kind, deterministic=False, rng_collection="noise")
    y = run(layer, x, rngs=rngs, **call_kwargs(kind))
    chex.assert_trees_all_equal(y, reference(kind, key, x))


def inference(kind: str, x: jax.Array) -> jax.Array:
    """What a ``kind`` module computes at inference."""
    if kind == "VanillaDropout":
        return x * (1 - RATE)
    if kind == "DropConnectDense":
        return dense(x, fixed_kernel(None, (x.shape[-1], x.shape[-1])))
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_inference_mode(kind: str) -> None:
    x = inputs()
    y = run(make_layer(kind, deterministic=True), x)
    np.testing.assert_allclose(y, inference(kind, x), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_preserved(dtype: Any) -> None:
    x = inputs().astype(dtype)
    y = run(dxl.Dropout(0.5), x, False, jax.random.key(0))
    assert y.dtype == dtype
    chex.assert_trees_all_equal(y, dx.dropout(jax.random.key(0), x, 0.5))


def test_traced_rate_does_not_recompile() -> None:
    x, key = inputs(), jax.random.key(0)

    traces = []

    @jax.jit
    def apply(rate: jax.Array) -> jax.Array:
        traces.append(rate)
        return run(dxl.Dropout(rate), x, False, key)

    for rate in (0.1, 0.5, 0.9):
        rate = jnp.float32(rate)
        expected = jax.jit(lambda r: dx.dropout(key, x, r))(rate)
        chex.assert_trees_all_equal(apply(rate), expected)
    assert len(traces) == 1


# --- Linen transforms ----------------------------------------------------------


class Host(nn.Module):
    """Applies ``transform(layer)`` (or a KeyProbe) under the name 'noise'."""

    kind: str
    transform: Callable[[Any], Any]
    probe: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # AnnealedDropout gets (x, deterministic, rng, step) positionally, since
        # nn.vmap drops keyword arguments; the field sets deterministic.
        args = (None, None, STEP) if self.kind == "AnnealedDropout" else ()
        if self.probe:
            return self.transform(KeyProbe)(name="noise")(x, *args)
        fields, fixed = layer_args(self.kind, x.shape[-1])
        layer_cls = self.transform(getattr(dxl, self.kind))
        return layer_cls(*fields, **fixed, deterministic=False, name="noise")(x, *args)


def _apply_host(kind: str, transform: Callable[[Any], Any], x: jax.Array) -> tuple[Any, Any]:
    rngs = {"dropout": jax.random.key(5)}
    y = run(Host(kind, transform), x, rngs=rngs)
    keys = run(Host(kind, transform, probe=True), x, rngs=rngs)
    return y, keys


@pytest.mark.parametrize("kind", KINDS)
def test_nn_jit(kind: str) -> None:
    x = inputs()
    y, key = _apply_host(kind, nn.jit, x)
    assert_same(kind, y, reference(kind, key, x), traced=True)


@pytest.mark.parametrize("kind", KINDS)
def test_nn_remat(kind: str) -> None:
    x = inputs()
    y, key = _apply_host(kind, nn.remat, x)
    assert_same(kind, y, reference(kind, key, x), traced=True)


def test_nn_remat_gradient_is_mask_over_keep() -> None:
    x, key = inputs(), jax.random.key(2)

    def loss(x: jax.Array) -> jax.Array:
        return run(nn.remat(dxl.Dropout)(RATE, deterministic=False), x, rng=key).sum()

    grad = jax.grad(loss)(x)
    kept = dx.keep_mask(key, x.shape, RATE)
    np.testing.assert_allclose(grad, jnp.where(kept, 1 / (1 - RATE), 0), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_nn_vmap_split_rngs(kind: str) -> None:
    x = inputs((6, 40))

    in_axes = (0, None, None, None) if kind == "AnnealedDropout" else 0

    def vmapped(cls: Any) -> Any:
        # DropConnectDense's parameters are shared by the examples.
        return nn.vmap(
            cls,
            in_axes=in_axes,
            out_axes=0,
            variable_axes={"params": None},
            split_rngs={"params": False, "dropout": True},
        )

    y, keys = _apply_host(kind, vmapped, x)
    assert keys.shape == (6,)
    expected = jax.vmap(lambda k, row: reference(kind, k, row))(keys, x)
    assert_same(kind, y, expected, traced=True)
    # One key per example: the rows get different noise.
    assert not bool((y[0] / x[0] == y[1] / x[1]).all())


class ScanBody(nn.Module):
    """One scanned step: apply the layer (or probe) to the carry, emit the result."""

    kind: str
    probe: bool = False

    @nn.compact
    def __call__(self, carry: jax.Array, _: Any) -> tuple[jax.Array, Any]:
        if self.probe:
            return carry, KeyProbe(name="noise")(carry)
        layer = make_layer(self.kind, carry.shape[-1], deterministic=False, name="noise")
        y = layer(carry, **call_kwargs(self.kind))
        return y, y


@pytest.mark.parametrize("kind", KINDS)
def test_nn_scan_split_rngs(kind: str) -> None:
    x, length = inputs(), 3
    rngs = {"dropout": jax.random.key(9)}

    def scan_outputs(probe: bool) -> Any:
        scanned = nn.scan(
            ScanBody,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            length=length,
        )
        return run(scanned(kind, probe), x, None, rngs=rngs)[1]

    ys, keys = scan_outputs(probe=False), scan_outputs(probe=True)
    assert keys.shape == (length,)
    carry = x
    for i in range(length):
        carry = reference(kind, keys[i], carry)
        assert_same(kind, ys[i], carry, traced=True)
        carry = ys[i]
    assert len({jax.random.key_data(k).tobytes() for k in keys}) == length


# --- AnnealedDropout ---------------------------------------------------------------


def test_annealed_follows_schedule() -> None:
    x, key = inputs((32, 32)), jax.random.key(4)
    layer = dxl.AnnealedDropout(SCHEDULE)
    for step in (0, 20, 31):
        y = run(layer, x, False, key, step=step)
        chex.assert_trees_all_equal(y, dx.dropout(key, x, SCHEDULE(step)))
    chex.assert_trees_all_equal(run(layer, x, False, key, step=32), x)


def test_annealed_requires_step_while_training_only() -> None:
    x = inputs()
    layer = dxl.AnnealedDropout(SCHEDULE)
    with pytest.raises(ValueError, match="step is required while training"):
        run(layer, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    chex.assert_trees_all_equal(run(layer, x, deterministic=True), x)


# --- training ---------------------------------------------------------------------


class TrainNet(nn.Module):
    """A tiny MLP or CNN with one noise layer of ``kind`` (after SELU for AlphaDropout)."""

    kind: str
    conv: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, step: Any = None) -> jax.Array:
        def layer(x: jax.Array, dims: tuple[int, ...]) -> jax.Array:
            module = make_layer(self.kind, x.shape[-1], broadcast_dims=dims)
            return module(x, not train, **call_kwargs(self.kind, step))

        activation = nn.selu if self.kind == "AlphaDropout" else nn.relu
        if self.conv:
            x = activation(nn.Conv(8, (3, 3))(x))
            x = layer(x, (1, 2)).mean(axis=(1, 2))  # channel dropout
        else:
            x = layer(activation(nn.Dense(32)(x)), ())
        return nn.Dense(1)(x)[:, 0]


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
    model = TrainNet(kind, conv)
    params = model.init(jax.random.key(1), x, train=False)["params"]
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    def loss_fn(params: Any, step: jax.Array, key: jax.Array, train: bool) -> jax.Array:
        pred = cast(
            jax.Array, model.apply({"params": params}, x, train, step, rngs={"dropout": key})
        )
        return jnp.mean((pred - target) ** 2)

    traces = []

    @jax.jit
    def train_step(params: Any, opt_state: Any, step: jax.Array) -> tuple[Any, Any]:
        traces.append(step)  # runs once per trace, not per call
        key = jax.random.fold_in(jax.random.key(2), step)
        grads = jax.grad(loss_fn)(params, step, key, True)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    before = loss_fn(params, jnp.int32(0), jax.random.key(0), False)
    for step in range(40):
        params, opt_state = train_step(params, opt_state, jnp.int32(step))
    after = loss_fn(params, jnp.int32(0), jax.random.key(0), False)
    assert len(traces) == 1  # one compilation for the whole run, step included
    # A model that does not learn stays near 1x its initial loss; the slowest
    # here, the CNN with alpha dropout on 8 channels, reaches about 0.71x.
    assert bool(jnp.isfinite(after)) and after < 0.75 * before, (before, after)


# --- statistics ------------------------------------------------------------------

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
    layer = dxl.GaussianDropout(RATE, deterministic=False)
    y = run(layer, jnp.ones((N,)), rngs={"dropout": jax.random.key(21)})
    _assert_moments(y, 1.0, RATE / (1 - RATE))


def test_gaussian_noise_moments() -> None:
    layer = dxl.GaussianNoise(STDDEV, deterministic=False)
    y = run(layer, jnp.zeros((N,)), rngs={"dropout": jax.random.key(22)})
    _assert_moments(y, 0.0, STDDEV**2)


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_missing_deterministic_names_the_fix(kind: str) -> None:
    with pytest.raises(ValueError, match=r"deterministic=not train"):
        run(make_layer(kind), inputs(), **call_kwargs(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_missing_rng_names_the_fix(kind: str) -> None:
    layer = make_layer(kind, deterministic=False)
    with pytest.raises(errors.InvalidRngError, match=r"rngs=\{'dropout': jax.random.key"):
        run(layer, inputs(), **call_kwargs(kind))


def test_traced_deterministic_names_the_fix() -> None:
    # nn.remat traces positional call arguments unless they are static.
    with pytest.raises(TypeError, match="static_argnums"):
        run(nn.remat(dxl.Dropout)(RATE), inputs(), False, jax.random.key(0))
    y = run(nn.remat(dxl.Dropout, static_argnums=(2,))(RATE), inputs(), False, jax.random.key(0))
    chex.assert_trees_all_equal(y, dx.dropout(jax.random.key(0), inputs(), RATE))


def test_bad_rate_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"dropoutx.linen.Dropout: .*rate=1.5"):
        dxl.Dropout(1.5)
    with pytest.raises(ValueError, match=r"dropoutx.linen.GaussianDropout"):
        dxl.GaussianDropout(1.0)
    with pytest.raises(ValueError, match=r"dropoutx.linen.GaussianNoise: stddev"):
        dxl.GaussianNoise(-1.0)
    with pytest.raises(TypeError, match=r"dropoutx.linen.AnnealedDropout: schedule"):
        dxl.AnnealedDropout(0.5)  # type: ignore[arg-type]


def test_bad_broadcast_dims_error_names_the_function() -> None:
    with pytest.raises(ValueError, match=r"dropoutx.inverted_dropout: broadcast_dims"):
        run(dxl.Dropout(0.5, broadcast_dims=(5,)), inputs(), False, jax.random.key(0))
