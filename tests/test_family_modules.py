"""Tests for the Flax modules of the rest of the family (issue 7).

What they prove: ``AlphaDropout`` and ``DropPath`` (Linen and NNX) equal their
functional transforms for the same key, eagerly and under ``jit``, and are the
identity at inference; ``DropPath`` drops whole examples. ``DropConnectDense``
and ``DropConnectLinear`` have the parameters of ``flax.linen.Dense`` /
``flax.nnx.Linear``, equal them exactly at inference, and while training
compute ``x @ inverted_dropout(key, kernel, rate) + bias`` with one kernel mask
for the whole batch; their kernel gradient is the mask scaled by ``1 / keep``;
they train a tiny model; missing flags and keys give errors that name the fix.
The runs of every module under the Flax transforms (jit, vmap, scan, remat) and
the one-compile training tests are in ``test_linen.py`` and ``test_nnx.py``,
parametrised over the whole family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import errors, nnx

import dropoutx as dx
from dropoutx import linen as dxl
from dropoutx import nnx as dxn

RATE = 0.3
KEY = jax.random.key(7)
FUNCTIONS: dict[str, Callable[..., jax.Array]] = {
    "AlphaDropout": dx.alpha_dropout,
    "DropPath": dx.drop_path,
}
ELEMENTWISE = tuple(FUNCTIONS)


def inputs(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


# --- Linen: AlphaDropout and DropPath -----------------------------------------------


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_linen_equals_function_for_the_same_key(kind: str) -> None:
    x = inputs((16, 4, 8))
    layer = getattr(dxl, kind)(RATE)
    expected = FUNCTIONS[kind](KEY, x, RATE)
    y = layer.apply({}, x, deterministic=False, rng=KEY)
    chex.assert_trees_all_equal(y, expected)
    jitted = jax.jit(lambda x, key: layer.apply({}, x, deterministic=False, rng=key))
    chex.assert_trees_all_equal(jitted(x, KEY), expected)
    # The key drawn from the 'dropout' collection is used the same way.
    from_collection = layer.apply({}, x, deterministic=False, rngs={"dropout": KEY})
    assert from_collection.shape == x.shape and from_collection.dtype == x.dtype


def test_linen_options_are_passed_through() -> None:
    x = inputs((16, 4, 8))
    y = dxl.AlphaDropout(RATE, broadcast_dims=(1,)).apply({}, x, deterministic=False, rng=KEY)
    chex.assert_trees_all_equal(y, dx.alpha_dropout(KEY, x, RATE, broadcast_dims=(1,)))
    y = dxl.DropPath(RATE, scale_by_keep=False).apply({}, x, deterministic=False, rng=KEY)
    chex.assert_trees_all_equal(y, dx.drop_path(KEY, x, RATE, scale_by_keep=False))


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_linen_deterministic_is_identity_without_rng(kind: str) -> None:
    x = inputs((4, 8))
    chex.assert_trees_all_equal(getattr(dxl, kind)(RATE).apply({}, x, deterministic=True), x)
    chex.assert_trees_all_equal(getattr(dxl, kind)(RATE, deterministic=True).apply({}, x), x)
    # A concrete rate of 0 draws no key either.
    chex.assert_trees_all_equal(getattr(dxl, kind)(0.0).apply({}, x, deterministic=False), x)


def test_linen_drop_path_drops_whole_examples_under_nn_jit() -> None:
    class Residual(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            return x + dxl.DropPath(0.5, deterministic=False)(jnp.ones_like(x))

    x = jnp.zeros((64, 3, 4))
    y = nn.jit(Residual)().apply({}, x, rngs={"dropout": KEY})
    per_example = y.reshape(64, -1)
    assert bool((per_example == per_example[:, :1]).all())
    assert set(per_example[:, 0].tolist()) == {0.0, 2.0}


# --- Linen: DropConnectDense --------------------------------------------------------


def dense_variables(features: int = 5, in_features: int = 3) -> tuple[Any, Any]:
    x = jnp.ones((2, in_features))
    ours = dxl.DropConnectDense(features, RATE).init(jax.random.key(0), x, deterministic=True)
    theirs = nn.Dense(features).init(jax.random.key(0), x)
    return ours, theirs


def test_linen_drop_connect_has_dense_params_and_output() -> None:
    ours, theirs = dense_variables()
    chex.assert_trees_all_equal(ours, theirs)  # same names, shapes and values
    x = inputs((6, 3))
    layer = dxl.DropConnectDense(5, RATE)
    chex.assert_trees_all_equal(
        layer.apply(ours, x, deterministic=True), nn.Dense(5).apply(theirs, x)
    )
    no_bias = dxl.DropConnectDense(5, RATE, use_bias=False).init(KEY, x, deterministic=True)
    assert set(no_bias["params"]) == {"kernel"}


def test_linen_drop_connect_one_kernel_mask_for_the_batch() -> None:
    features, in_features = 256, 256
    variables = dxl.DropConnectDense(features, RATE).init(
        jax.random.key(0), jnp.ones((1, in_features)), deterministic=True
    )
    params = variables["params"]
    params = {"kernel": params["kernel"], "bias": jnp.arange(features, dtype=jnp.float32)}
    layer = dxl.DropConnectDense(features, RATE, deterministic=False)
    # Rows e_i: output row i is row i of the masked kernel plus the bias, so
    # every row of the batch is seen through the same mask.
    y = layer.apply({"params": params}, jnp.eye(in_features), rng=KEY)
    effective = y - params["bias"]
    masked = dx.inverted_dropout(KEY, params["kernel"], RATE)
    chex.assert_trees_all_close(effective, masked, atol=1e-5)
    # Kept entries are kernel / (1 - rate); the dropped fraction is within 4
    # sigma of the binomial (65536 entries, sigma = 0.0018).
    kept = masked != 0
    chex.assert_trees_all_equal(
        jnp.where(kept, masked, 0), jnp.where(kept, params["kernel"] / (1 - RATE), 0)
    )
    sigma = (RATE * (1 - RATE) / kept.size) ** 0.5
    assert abs(float(1 - kept.mean()) - RATE) < 4 * sigma
    # Equal rows give equal outputs; training equals x @ masked + b.
    x = jnp.tile(inputs((1, in_features)), (4, 1))
    y = layer.apply({"params": params}, x, rng=KEY)
    assert bool((y == y[:1]).all())
    chex.assert_trees_all_close(y, x @ masked + params["bias"], rtol=1e-5, atol=1e-4)


def test_linen_drop_connect_jit_and_gradient_is_mask_over_keep() -> None:
    variables, _ = dense_variables(8, 6)
    layer = dxl.DropConnectDense(8, RATE, deterministic=False)
    batch = 4
    x = jnp.ones((batch, 6))

    @jax.jit
    def loss(variables: Any, key: jax.Array) -> jax.Array:
        return layer.apply(variables, x, rng=key).sum()

    grads = jax.grad(loss)(variables, KEY)
    mask_over_keep = dx.inverted_dropout(KEY, jnp.ones((6, 8)), RATE)
    chex.assert_trees_all_close(grads["params"]["kernel"], batch * mask_over_keep, rtol=1e-6)
    chex.assert_trees_all_close(grads["params"]["bias"], jnp.full((8,), float(batch)))
    eager = layer.apply(variables, x, rng=KEY)
    chex.assert_trees_all_close(jax.jit(layer.apply)(variables, x, rng=KEY), eager, rtol=1e-6)


def test_linen_drop_connect_trains() -> None:
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, train: bool) -> jax.Array:
            x = nn.relu(dxl.DropConnectDense(32, 0.2, deterministic=not train)(x))
            return dxl.DropConnectDense(1, 0.2, deterministic=not train)(x)

    x = inputs((64, 4))
    target = jnp.sin(x.sum(axis=1, keepdims=True))
    model = Model()
    params = model.init(jax.random.key(0), x, train=False)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params: Any, opt_state: Any, key: jax.Array) -> tuple[Any, Any, jax.Array]:
        def loss_fn(params: Any) -> jax.Array:
            y = model.apply(params, x, train=True, rngs={"dropout": key})
            return jnp.mean((y - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    def eval_loss(params: Any) -> float:
        return float(jnp.mean((model.apply(params, x, train=False) - target) ** 2))

    before = eval_loss(params)
    for key in jax.random.split(jax.random.key(1), 100):
        params, opt_state, _ = step(params, opt_state, key)
    assert eval_loss(params) < 0.5 * before


@pytest.mark.parametrize("kind", (*ELEMENTWISE, "DropConnectDense"))
def test_linen_errors_name_the_fix(kind: str) -> None:
    layer = (
        dxl.DropConnectDense(4, RATE) if kind == "DropConnectDense" else getattr(dxl, kind)(RATE)
    )
    x = jnp.ones((2, 3))
    params = {"params": dense_variables(4, 3)[0]["params"]} if kind == "DropConnectDense" else {}
    with pytest.raises(ValueError, match=r'"deterministic" must be passed'):
        layer.apply(params, x)
    with pytest.raises(errors.InvalidRngError, match=r"'dropout' collection"):
        layer.apply(params, x, deterministic=False)
    with pytest.raises(ValueError, match="rate"):
        getattr(dxl, kind)(*((4,) if kind == "DropConnectDense" else ()), 1.5)


# --- NNX: AlphaDropout and DropPath -------------------------------------------------


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_nnx_equals_function_for_the_same_key(kind: str) -> None:
    x = inputs((16, 4, 8))
    layer = getattr(dxn, kind)(RATE)
    expected = FUNCTIONS[kind](KEY, x, RATE)
    chex.assert_trees_all_equal(layer(x, rngs=KEY), expected)
    jitted = nnx.jit(lambda layer, x, key: layer(x, rngs=key))
    chex.assert_trees_all_equal(jitted(layer, x, KEY), expected)
    # From an nnx.Rngs: the key its 'dropout' stream gives.
    from_rngs = layer(x, rngs=nnx.Rngs(dropout=3))
    chex.assert_trees_all_equal(from_rngs, FUNCTIONS[kind](nnx.Rngs(dropout=3).dropout(), x, RATE))


def test_nnx_options_are_passed_through() -> None:
    x = inputs((16, 4, 8))
    y = dxn.AlphaDropout(RATE, broadcast_dims=(1,))(x, rngs=KEY)
    chex.assert_trees_all_equal(y, dx.alpha_dropout(KEY, x, RATE, broadcast_dims=(1,)))
    y = dxn.DropPath(RATE, scale_by_keep=False)(x, rngs=KEY)
    chex.assert_trees_all_equal(y, dx.drop_path(KEY, x, RATE, scale_by_keep=False))


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_nnx_eval_and_view_are_identity(kind: str) -> None:
    x = inputs((4, 8))
    layer = getattr(dxn, kind)(RATE, rngs=nnx.Rngs(dropout=0))
    assert not bool((layer(x) == x).all())
    chex.assert_trees_all_equal(nnx.view(layer, deterministic=True)(x), x)
    layer.eval()
    chex.assert_trees_all_equal(layer(x), x)
    layer.train()
    assert layer.deterministic is False
    chex.assert_trees_all_equal(getattr(dxn, kind)(RATE)(x, deterministic=True), x)


def test_nnx_drop_path_drops_whole_examples_under_nnx_jit() -> None:
    layer = dxn.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    y = nnx.jit(lambda layer, x: layer(x))(layer, jnp.ones((64, 3, 4)))
    per_example = y.reshape(64, -1)
    assert bool((per_example == per_example[:, :1]).all())
    assert set(per_example[:, 0].tolist()) == {0.0, 2.0}


# --- NNX: DropConnectLinear ---------------------------------------------------------


def test_nnx_drop_connect_has_linear_params_and_output() -> None:
    ours = dxn.DropConnectLinear(3, 5, RATE, rngs=nnx.Rngs(0))
    theirs = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(
        nnx.to_pure_dict(nnx.state(ours, nnx.Param)),
        nnx.to_pure_dict(nnx.state(theirs, nnx.Param)),
    )
    x = inputs((6, 3))
    chex.assert_trees_all_equal(ours(x, deterministic=True), theirs(x))
    ours.eval()
    chex.assert_trees_all_equal(ours(x), theirs(x))
    chex.assert_trees_all_equal(nnx.view(ours, deterministic=False)(x, rngs=KEY).shape, (6, 5))
    no_bias = dxn.DropConnectLinear(3, 5, RATE, use_bias=False, rngs=nnx.Rngs(0))
    assert set(nnx.to_pure_dict(nnx.state(no_bias, nnx.Param))) == {"kernel"}


def test_nnx_drop_connect_one_kernel_mask_for_the_batch() -> None:
    in_features, out_features = 256, 256
    layer = dxn.DropConnectLinear(in_features, out_features, RATE, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.arange(out_features, dtype=jnp.float32)
    kernel = layer.kernel[...]
    masked = dx.inverted_dropout(KEY, kernel, RATE)
    effective = layer(jnp.eye(in_features), rngs=KEY) - layer.bias[...]
    chex.assert_trees_all_close(effective, masked, atol=1e-5)
    kept = masked != 0
    sigma = (RATE * (1 - RATE) / kept.size) ** 0.5
    assert abs(float(1 - kept.mean()) - RATE) < 4 * sigma
    x = jnp.tile(inputs((1, in_features)), (4, 1))
    y = layer(x, rngs=KEY)
    assert bool((y == y[:1]).all())
    chex.assert_trees_all_close(y, x @ masked + layer.bias[...], rtol=1e-5, atol=1e-4)


def test_nnx_drop_connect_jit_and_gradient_is_mask_over_keep() -> None:
    layer = dxn.DropConnectLinear(6, 8, RATE, rngs=nnx.Rngs(0))
    batch = 4
    x = jnp.ones((batch, 6))

    @nnx.jit
    def loss(layer: dxn.DropConnectLinear, key: jax.Array) -> jax.Array:
        return layer(x, rngs=key).sum()

    grads = nnx.grad(loss)(layer, KEY)
    mask_over_keep = dx.inverted_dropout(KEY, jnp.ones((6, 8)), RATE)
    chex.assert_trees_all_close(grads.kernel[...], batch * mask_over_keep, rtol=1e-6)
    chex.assert_trees_all_close(grads.bias[...], jnp.full((8,), float(batch)))
    forward = nnx.jit(lambda layer, x, key: layer(x, rngs=key))
    chex.assert_trees_all_close(forward(layer, x, KEY), layer(x, rngs=KEY), rtol=1e-6)


def test_nnx_drop_connect_stream_advances_under_nnx_jit() -> None:
    layer = dxn.DropConnectLinear(16, 16, 0.5, rngs=nnx.Rngs(0))
    forward = nnx.jit(lambda layer, x: layer(x))
    x = jnp.eye(16)
    assert not bool((forward(layer, x) == forward(layer, x)).all())


class TinyModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.hidden = dxn.DropConnectLinear(4, 32, 0.2, rngs=rngs)
        self.out = dxn.DropConnectLinear(32, 1, 0.2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


def test_nnx_drop_connect_trains() -> None:
    x = inputs((64, 4))
    target = jnp.sin(x.sum(axis=1, keepdims=True))
    model = TinyModel(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: TinyModel, optimizer: nnx.Optimizer) -> jax.Array:
        def loss_fn(model: TinyModel) -> jax.Array:
            return jnp.mean((model(x) - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    def eval_loss() -> float:
        return float(jnp.mean((nnx.view(model, deterministic=True)(x) - target) ** 2))

    before = eval_loss()
    for _ in range(100):
        step(model, optimizer)
    assert eval_loss() < 0.5 * before


@pytest.mark.parametrize("kind", (*ELEMENTWISE, "DropConnectLinear"))
def test_nnx_errors_name_the_fix(kind: str) -> None:
    x = jnp.ones((2, 3))
    if kind == "DropConnectLinear":
        layer = dxn.DropConnectLinear(3, 4, RATE, deterministic=None, rngs=nnx.Rngs(params=0))
        with pytest.raises(ValueError, match="rate"):
            dxn.DropConnectLinear(3, 4, 1.5, rngs=nnx.Rngs(0))
    else:
        layer = getattr(dxn, kind)(RATE, deterministic=None)
        with pytest.raises(ValueError, match="rate"):
            getattr(dxn, kind)(1.5)
    with pytest.raises(ValueError, match="no `deterministic` value"):
        layer(x)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        layer(x, deterministic=False)
