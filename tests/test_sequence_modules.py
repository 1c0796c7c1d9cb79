"""Tests for the sequence and structured dropout modules of ``dropoutx.linen`` and ``.nnx``.

What they prove:

- ``SpatialDropout`` and ``DropBlock`` (Linen and NNX) equal their functional
  transform applied with the key the module draws, eagerly and under
  ``nn.jit`` / ``nn.scan`` / ``nn.remat`` and ``nnx.jit`` / ``nnx.scan`` /
  ``nnx.vmap``, and are the identity at inference.
- ``RecurrentDropoutCell`` wrapping ``LSTMCell``, ``OptimizedLSTMCell``,
  ``GRUCell`` and ``SimpleCell`` equals a step-by-step reference loop that
  applies ``inverted_dropout`` with the cell's key to the inputs and to ``h``
  (never to ``c``) and stores the cell's own, unmasked, carry; the masks are
  exactly the same at every step of a sequence and differ across examples and
  across calls, with the documented RNG set-ups (Linen ``split_rngs={'params':
  False, 'dropout': False}``; NNX ``nnx.RNN(cell)`` and ``broadcast_rngs=
  'dropout'``, with streams tagged 'dropout' or 'default'); set-ups that would
  give a new mask per step or no key raise an error naming the fix; an LSTM
  with variational dropout trains.
- ``ZoneoutCell`` equals a reference loop of ``dx.zoneout`` on every carry
  leaf with a new key per step, and takes the expectation at inference.
- Per-layer stochastic-depth rates ``linspace(0, max_rate, depth)`` fed as a
  scanned input to ``DropPath`` inside ``nn.scan`` / ``nnx.scan``: each layer
  drops with its own rate, exactly, and one compilation serves every schedule.
- Bad input (a cell that is not a cell, rates out of range) is rejected at
  construction with an error naming the module and the argument.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dropoutx as dx
from dropoutx import linen as dxl
from dropoutx import nnx as dxn

RATE = 0.3
INPUT_RATE = 0.3
RECURRENT_RATE = 0.4
FEATURES, HIDDEN, BATCH, STEPS = 3, 6, 5, 7
LINEN_CELLS = {
    "LSTMCell": lambda: nn.LSTMCell(HIDDEN),
    "OptimizedLSTMCell": lambda: nn.OptimizedLSTMCell(HIDDEN),
    "GRUCell": lambda: nn.GRUCell(HIDDEN),
    "SimpleCell": lambda: nn.SimpleCell(HIDDEN),
}
NNX_CELLS = {
    "LSTMCell": lambda rngs: nnx.LSTMCell(FEATURES, HIDDEN, rngs=rngs),
    "OptimizedLSTMCell": lambda rngs: nnx.OptimizedLSTMCell(FEATURES, HIDDEN, rngs=rngs),
    "GRUCell": lambda rngs: nnx.GRUCell(FEATURES, HIDDEN, rngs=rngs),
    "SimpleCell": lambda rngs: nnx.SimpleCell(FEATURES, HIDDEN, rngs=rngs),
}
BROADCAST = {"params": False, "dropout": False}  # one key per sequence
SPLIT = {"params": False, "dropout": True}  # a new key per step


def sequences(shape: tuple[int, ...] = (BATCH, STEPS, FEATURES), seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape) + 1.0


def feature_maps(shape: tuple[int, ...] = (3, 8, 8, 4), seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape) + 2.0


def hidden(carry: Any) -> jax.Array:
    return carry[1] if isinstance(carry, tuple) else carry


def mask_hidden(carry: Any, key: Any, rate: float) -> Any:
    """What the cell reads: ``h`` with inverted dropout, ``c`` unchanged."""
    if isinstance(carry, tuple):
        return (carry[0], dx.inverted_dropout(key, carry[1], rate))
    return dx.inverted_dropout(key, carry, rate)


def variational_reference(
    step: Any, carry: Any, x: jax.Array, key: Any, input_rate: float, recurrent_rate: float
) -> tuple[Any, jax.Array]:
    """Runs ``step(carry, x_t)`` over time with the sequence's two masks from ``key``."""
    input_key, recurrent_key = jax.random.split(key)
    outputs = []
    for t in range(x.shape[1]):
        x_t = dx.inverted_dropout(input_key, x[:, t], input_rate)
        carry, y = step(mask_hidden(carry, recurrent_key, recurrent_rate), x_t)
        outputs.append(y)
    return carry, jnp.stack(outputs, axis=1)


def zoneout_reference(
    step: Any, carry: Any, x: jax.Array, keys: list[Any], rate: float
) -> tuple[Any, jax.Array]:
    """Runs ``step`` over time, then ``dx.zoneout`` leaf by leaf with ``keys[t]``."""
    outputs = []
    for t in range(x.shape[1]):
        new, _ = step(carry, x[:, t])
        old_leaves, treedef = jax.tree.flatten(carry)
        leaf_keys = jax.random.split(keys[t], len(old_leaves))
        zoned = [
            dx.zoneout(k, old, fresh, rate)
            for k, old, fresh in zip(leaf_keys, old_leaves, treedef.flatten_up_to(new), strict=True)
        ]
        carry = treedef.unflatten(zoned)
        outputs.append(hidden(carry))
    return carry, jnp.stack(outputs, axis=1)


# --- SpatialDropout and DropBlock ------------------------------------------------------

STRUCTURED = ("SpatialDropout", "DropBlock")


def structured_reference(kind: str, key: Any, x: jax.Array, channel_axis: int = -1) -> jax.Array:
    if kind == "SpatialDropout":
        return dx.spatial_dropout(key, x, RATE, channel_axis=channel_axis)
    return dx.drop_block(key, x, RATE, block_size=3, channel_axis=channel_axis)


def linen_structured(kind: str, **fields: Any) -> nn.Module:
    if kind == "DropBlock":
        fields.setdefault("block_size", 3)
    return getattr(dxl, kind)(RATE, **fields)  # type: ignore[no-any-return]


class LinenKeyProbe(nn.Module):
    """Returns the key ``make_rng('dropout')`` gives here: the one a layer here draws."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.make_rng("dropout")


class LinenHost(nn.Module):
    """Applies ``transform(layer class)`` (or the key probe) under the name 'noise'."""

    kind: str
    transform: Any
    probe: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.probe:
            return self.transform(LinenKeyProbe)(name="noise")(x)  # type: ignore[no-any-return]
        fields = {"block_size": 3} if self.kind == "DropBlock" else {}
        layer_cls = self.transform(getattr(dxl, self.kind))
        return layer_cls(RATE, **fields, deterministic=False, name="noise")(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("channel_axis", [-1, 1])
@pytest.mark.parametrize("kind", STRUCTURED)
def test_linen_structured_equals_functional(kind: str, channel_axis: int) -> None:
    x, key = feature_maps(), jax.random.key(3)
    layer = linen_structured(kind, channel_axis=channel_axis)
    y = layer.apply({}, x, False, key)  # rng is the third positional argument
    chex.assert_trees_all_equal(y, structured_reference(kind, key, x, channel_axis))
    rngs = {"dropout": jax.random.key(4)}
    drawn = LinenKeyProbe().apply({}, x, rngs=rngs)
    y = linen_structured(kind, channel_axis=channel_axis, deterministic=False).apply(
        {}, x, rngs=rngs
    )
    chex.assert_trees_all_equal(y, structured_reference(kind, drawn, x, channel_axis))
    chex.assert_trees_all_equal(layer.apply({}, x, deterministic=True), x)


@pytest.mark.parametrize("transform", [nn.jit, nn.remat], ids=["jit", "remat"])
@pytest.mark.parametrize("kind", STRUCTURED)
def test_linen_structured_under_transforms(kind: str, transform: Any) -> None:
    x, rngs = feature_maps(), {"dropout": jax.random.key(5)}
    y = LinenHost(kind, transform).apply({}, x, rngs=rngs)
    key = LinenHost(kind, transform, probe=True).apply({}, x, rngs=rngs)
    chex.assert_trees_all_equal(y, structured_reference(kind, key, x))


@pytest.mark.parametrize("kind", STRUCTURED)
def test_linen_structured_under_nn_scan(kind: str) -> None:
    # Three scanned layers, each with its own key (split_rngs), applied in turn.
    x, depth, rngs = feature_maps(), 3, {"dropout": jax.random.key(6)}

    def scanned(probe: bool) -> Any:
        class Layer(nn.Module):
            @nn.compact
            def __call__(self, h: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
                if probe:
                    return h, LinenKeyProbe(name="noise")(h)
                out = linen_structured(kind, deterministic=False, name="noise")(h)
                return out, out

        stack = nn.scan(Layer, split_rngs={"dropout": True}, length=depth)
        return stack().apply({}, x, None, rngs=rngs)[1]

    ys, keys = scanned(False), scanned(True)
    carry = x
    for layer in range(depth):
        chex.assert_trees_all_equal(ys[layer], structured_reference(kind, keys[layer], carry))
        carry = ys[layer]


class NNXKeyProbe(nnx.Module):
    """Forks its stream as the dropoutx modules do and returns the next key."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.rngs = rngs["dropout"].fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.rngs()


def nnx_structured(kind: str, **kwargs: Any) -> nnx.Module:
    if kind == "DropBlock":
        kwargs.setdefault("block_size", 3)
    return getattr(dxn, kind)(RATE, **kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize("channel_axis", [-1, 1])
@pytest.mark.parametrize("kind", STRUCTURED)
def test_nnx_structured_equals_functional(kind: str, channel_axis: int) -> None:
    x, key = feature_maps(), jax.random.key(3)
    layer = nnx_structured(kind, channel_axis=channel_axis, rngs=nnx.Rngs(dropout=2))
    chex.assert_trees_all_equal(
        layer(x, rngs=key), structured_reference(kind, key, x, channel_axis)
    )
    probe = NNXKeyProbe(nnx.Rngs(dropout=2))
    for _ in range(2):  # the stream advances
        chex.assert_trees_all_equal(layer(x), structured_reference(kind, probe(x), x, channel_axis))
    layer.eval()
    chex.assert_trees_all_equal(layer(x), x)


@pytest.mark.parametrize("kind", STRUCTURED)
def test_nnx_structured_under_jit_and_vmap(kind: str) -> None:
    x = feature_maps()
    layer = nnx_structured(kind, rngs=nnx.Rngs(dropout=3))
    probe = NNXKeyProbe(nnx.Rngs(dropout=3))
    apply = nnx.jit(lambda layer, x: layer(x))
    for _ in range(2):
        chex.assert_trees_all_equal(apply(layer, x), structured_reference(kind, probe(x), x))
    # nnx.vmap with one call-time key per example (the example keeps its batch axis of 1).
    keys = jax.random.split(jax.random.key(4), x.shape[0])
    y = nnx.vmap(lambda layer, row, key: layer(row[None], rngs=key)[0], in_axes=(None, 0, 0))(
        layer, x, keys
    )
    expected = jax.vmap(lambda key, row: structured_reference(kind, key, row[None])[0])(keys, x)
    chex.assert_trees_all_equal(y, expected)


@pytest.mark.parametrize("kind", STRUCTURED)
def test_nnx_structured_under_nnx_scan(kind: str) -> None:
    x, depth = feature_maps(), 3

    class Block(nnx.Module):
        def __init__(self, probe: bool, rngs: nnx.Rngs) -> None:
            self.layer = NNXKeyProbe(rngs) if probe else nnx_structured(kind, rngs=rngs)
            self.probe = probe

        def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
            out = self.layer(h)
            return (h, out) if self.probe else (out, out)

    def build_and_run(probe: bool) -> Any:
        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs: nnx.Rngs) -> Block:
            return Block(probe, rngs)

        blocks = create(nnx.Rngs(dropout=8))

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def forward(h: jax.Array, block: Block) -> tuple[jax.Array, jax.Array]:
            return block(h)

        return forward(x, blocks)[1]

    ys, keys = build_and_run(False), build_and_run(True)
    carry = x
    for layer in range(depth):
        chex.assert_trees_all_equal(ys[layer], structured_reference(kind, keys[layer], carry))
        carry = ys[layer]


# --- Linen recurrent cells ----------------------------------------------------------------


class KeyedLinenCell(dxl.RecurrentDropoutCell):
    """Also outputs the key the cell resolves, broadcast over the batch."""

    @nn.compact
    def __call__(self, carry: Any, inputs: Any, deterministic: Any = None, rng: Any = None) -> Any:  # type: ignore[override]
        key, _ = self._resolve(None, None)
        new_carry, y = super().__call__(carry, inputs, rng=key)
        data = jnp.broadcast_to(jax.random.key_data(key), (inputs.shape[0], 2))
        return new_carry, (y, data)


class KeyedLinenZoneout(dxl.ZoneoutCell):
    @nn.compact
    def __call__(self, carry: Any, inputs: Any, deterministic: Any = None, rng: Any = None) -> Any:  # type: ignore[override]
        key, _ = self._resolve(None, None)
        new_carry, y = super().__call__(carry, inputs, rng=key)
        data = jnp.broadcast_to(jax.random.key_data(key), (inputs.shape[0], 2))
        return new_carry, (y, data)


def linen_params(cell: nn.Module, x: jax.Array) -> Any:
    carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)  # type: ignore[attr-defined]
    return cell.init(jax.random.key(1), carry, x[:, 0])


@pytest.mark.parametrize("name", LINEN_CELLS)
def test_linen_recurrent_equals_reference_loop(name: str) -> None:
    x = sequences()
    cell = KeyedLinenCell(
        LINEN_CELLS[name](),
        input_rate=INPUT_RATE,
        recurrent_rate=RECURRENT_RATE,
        deterministic=False,
    )
    rnn = nn.RNN(cell, split_rngs=BROADCAST, return_carry=True)
    variables = rnn.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    carry, (y, keys) = rnn.apply(variables, x, rngs={"dropout": jax.random.key(2)})
    # One key for the whole sequence: the same at every step, exactly.
    chex.assert_trees_all_equal(keys, jnp.broadcast_to(keys[:, :1], keys.shape))
    key = jax.random.wrap_key_data(keys[0, 0])
    inner = LINEN_CELLS[name]()
    params = {"params": variables["params"]["cell"]["cell"]}
    start = inner.initialize_carry(jax.random.key(0), x[:, 0].shape)
    ref_carry, ref_y = variational_reference(
        lambda c, x_t: inner.apply(params, c, x_t), start, x, key, INPUT_RATE, RECURRENT_RATE
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(carry, ref_carry, rtol=1e-6, atol=1e-6)  # stored unmasked


class Echo(nn.RNNCellBase):
    """A cell that outputs what it reads: the inputs, ``c`` and ``h``; it resets ``h`` to ones."""

    @nn.compact
    def __call__(self, carry: Any, inputs: jax.Array) -> tuple[Any, jax.Array]:
        c, h = carry
        return (c, jnp.ones_like(h)), jnp.concatenate([inputs, c, h], axis=-1)

    @nn.nowrap
    def initialize_carry(self, rng: Any, input_shape: tuple[int, ...]) -> Any:
        ones = jnp.ones((*input_shape[:-1], HIDDEN))
        return (3 * ones, ones)

    @property
    def num_feature_axes(self) -> int:
        return 1


def read_masks(y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The input mask, ``c`` and the ``h`` mask that ``Echo`` saw, per example and step."""
    return y[..., :FEATURES], y[..., FEATURES : FEATURES + HIDDEN], y[..., FEATURES + HIDDEN :]


def assert_variational(y: jax.Array) -> None:
    """Same masks at every step, different across examples, ``c`` untouched."""
    inputs, c, h = read_masks(y)
    for mask, rate in ((inputs, INPUT_RATE), (h, RECURRENT_RATE)):
        chex.assert_trees_all_equal(mask, jnp.broadcast_to(mask[:, :1], mask.shape))
        assert set(np.unique(mask).tolist()) == {0.0, np.float32(1 / (1 - rate))}
        assert len({tuple(row) for row in np.asarray(mask[:, 0])}) > 1  # per example
    chex.assert_trees_all_equal(c, jnp.full_like(c, 3.0))


def test_linen_recurrent_masks_per_sequence_and_example() -> None:
    x = jnp.ones((16, STEPS, FEATURES))
    cell = dxl.RecurrentDropoutCell(
        Echo(), input_rate=INPUT_RATE, recurrent_rate=RECURRENT_RATE, deterministic=False
    )
    rnn = nn.RNN(cell, split_rngs=BROADCAST, return_carry=True)
    carry, y = rnn.apply({}, x, rngs={"dropout": jax.random.key(0)})
    assert_variational(y)
    chex.assert_trees_all_equal(
        carry, (jnp.full((16, HIDDEN), 3.0), jnp.ones((16, HIDDEN)))
    )  # the cell's carry
    other = rnn.apply({}, x, rngs={"dropout": jax.random.key(1)})[1]
    assert not bool((other == y).all())  # a new key, new masks


@pytest.mark.parametrize("transform", ["jit", "remat"])
def test_linen_recurrent_under_jit_and_remat(transform: str) -> None:
    # nn.jit around the model, or nn.remat around the cell; the keys the cell resolved
    # (which the lifted transform may derive differently) feed the reference loop.
    x = sequences()

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> Any:
            cell_cls = nn.remat(KeyedLinenCell) if transform == "remat" else KeyedLinenCell
            cell = cell_cls(nn.LSTMCell(HIDDEN), INPUT_RATE, RECURRENT_RATE, False, name="cell")
            return nn.RNN(cell, split_rngs=BROADCAST)(x)

    model = nn.jit(Model)() if transform == "jit" else Model()
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    y, keys = model.apply(variables, x, rngs={"dropout": jax.random.key(3)})
    chex.assert_trees_all_equal(keys, jnp.broadcast_to(keys[:, :1], keys.shape))
    inner = nn.LSTMCell(HIDDEN)
    params = {"params": _cell_params(variables)}
    start = inner.initialize_carry(jax.random.key(0), x[:, 0].shape)
    _, ref_y = variational_reference(
        lambda c, x_t: inner.apply(params, c, x_t),
        start,
        x,
        jax.random.wrap_key_data(keys[0, 0]),
        INPUT_RATE,
        RECURRENT_RATE,
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)


def _cell_params(variables: Any) -> Any:
    """The wrapped LSTM's parameters, wherever the transforms put them."""
    found = []

    def visit(tree: Any) -> None:
        if isinstance(tree, dict):
            if set(tree) == {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}:
                found.append(tree)
            for value in tree.values():
                visit(value)

    visit(jax.tree.map(lambda a: a, dict(variables["params"])))
    assert len(found) == 1
    return found[0]


def test_linen_recurrent_inference_is_the_plain_cell() -> None:
    x = sequences()
    rnn = nn.RNN(dxl.RecurrentDropoutCell(nn.LSTMCell(HIDDEN), input_rate=0.5, deterministic=True))
    variables = rnn.init(jax.random.key(0), x)
    plain = nn.RNN(nn.LSTMCell(HIDDEN)).apply({"params": variables["params"]["cell"]}, x)
    chex.assert_trees_all_equal(rnn.apply(variables, x), plain)


def test_linen_forwards_initialize_carry_and_feature_axes() -> None:
    inner = nn.ConvLSTMCell(4, (3, 3))
    cell = dxl.RecurrentDropoutCell(inner, recurrent_rate=0.2)
    shape = (2, 5, 5, 3)
    chex.assert_trees_all_equal(
        cell.initialize_carry(jax.random.key(0), shape),
        inner.initialize_carry(jax.random.key(0), shape),
    )
    assert cell.num_feature_axes == inner.num_feature_axes == 3
    assert dxl.ZoneoutCell(inner, 0.1).num_feature_axes == 3


def test_linen_recurrent_wrong_rng_setups_name_the_fix() -> None:
    x = sequences()
    cell = dxl.RecurrentDropoutCell(nn.LSTMCell(HIDDEN), recurrent_rate=0.3, deterministic=False)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    fix = r"nn\.RNN\(cell, split_rngs=\{'params': False, 'dropout': False\}\)"
    with pytest.raises(
        ValueError, match=r"splits it, so every time step would draw a new mask.*" + fix
    ):
        nn.RNN(cell, split_rngs=SPLIT).init(rngs, x)
    with pytest.raises(ValueError, match=r"does not pass it into the scan.*" + fix):
        nn.RNN(cell).init(rngs, x)
    # Inference needs no key, so any set-up works.
    eval_cell = cell.clone(deterministic=True)
    nn.RNN(eval_cell).init(rngs, x)


def test_linen_zoneout_equals_reference_loop() -> None:
    x, rate = sequences(), 0.3
    rnn = nn.RNN(
        KeyedLinenZoneout(nn.LSTMCell(HIDDEN), rate, deterministic=False),
        split_rngs=SPLIT,
        return_carry=True,
    )
    variables = rnn.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    carry, (y, keys) = rnn.apply(variables, x, rngs={"dropout": jax.random.key(2)})
    step_keys = [jax.random.wrap_key_data(keys[0, t]) for t in range(STEPS)]
    assert len({tuple(np.asarray(keys[0, t])) for t in range(STEPS)}) == STEPS  # new per step
    inner = nn.LSTMCell(HIDDEN)
    params = {"params": variables["params"]["cell"]["cell"]}
    start = inner.initialize_carry(jax.random.key(0), x[:, 0].shape)
    ref_carry, ref_y = zoneout_reference(
        lambda c, x_t: inner.apply(params, c, x_t), start, x, step_keys, rate
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(carry, ref_carry, rtol=1e-6, atol=1e-6)


class Counter(nn.RNNCellBase):
    """``h <- h + 1``: a unit that zones out keeps its count."""

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return carry + 1, carry + 1

    @nn.nowrap
    def initialize_carry(self, rng: Any, input_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros((*input_shape[:-1], 64))

    @property
    def num_feature_axes(self) -> int:
        return 1


def test_linen_zoneout_new_mask_every_step_and_expectation() -> None:
    x, rate = jnp.ones((32, STEPS, 1)), 0.25
    rnn = nn.RNN(dxl.ZoneoutCell(Counter(), rate, deterministic=False), split_rngs=SPLIT)
    h = rnn.apply({}, x, rngs={"dropout": jax.random.key(0)})
    updated = jnp.diff(h, axis=1, prepend=0) == 1  # per step: updated, or kept
    assert len({updated[:, t].tobytes() for t in range(STEPS)}) == STEPS
    # 32 * 64 * 7 units: the kept fraction within 5 sigma of the rate.
    n = updated.size
    assert abs(float(1 - updated.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    expected = nn.RNN(dxl.ZoneoutCell(Counter(), rate, deterministic=True)).apply({}, x)
    # At inference h_t = h_{t-1} + (1 - rate).
    np.testing.assert_allclose(expected[0, :, 0], (1 - rate) * np.arange(1, STEPS + 1), rtol=1e-6)


def test_linen_zoneout_wrong_rng_setups_name_the_fix() -> None:
    x = sequences()
    cell = dxl.ZoneoutCell(nn.GRUCell(HIDDEN), 0.2, deterministic=False)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    fix = r"split_rngs=\{'params': False, 'dropout': True\}"
    with pytest.raises(ValueError, match=r"broadcasts it.*" + fix):
        nn.RNN(cell, split_rngs=BROADCAST).init(rngs, x)
    with pytest.raises(ValueError, match=r"does not pass it into the scan.*" + fix):
        nn.RNN(cell).init(rngs, x)


def test_linen_zoneout_and_variational_dropout_combine_with_two_collections() -> None:
    x = sequences()
    cell = dxl.ZoneoutCell(
        dxl.RecurrentDropoutCell(nn.LSTMCell(HIDDEN), recurrent_rate=0.3, deterministic=False),
        0.2,
        deterministic=False,
        rng_collection="zoneout",
    )
    rnn = nn.RNN(cell, split_rngs={"params": False, "dropout": False, "zoneout": True})
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1), "zoneout": jax.random.key(2)}
    variables = rnn.init(keys, x)
    y = rnn.apply(variables, x, rngs={"dropout": jax.random.key(3), "zoneout": jax.random.key(4)})
    assert y.shape == (BATCH, STEPS, HIDDEN)


# --- NNX recurrent cells ------------------------------------------------------------------


class KeyedNNXCell(dxn.RecurrentDropoutCell):
    """Also outputs the key the cell resolves, broadcast over the batch."""

    def __call__(self, carry: Any, inputs: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        key, _ = self._resolve(None, None)
        new_carry, y = super().__call__(carry, inputs, rngs=key)
        return new_carry, (y, jnp.broadcast_to(jax.random.key_data(key), (inputs.shape[0], 2)))


class KeyedNNXZoneout(dxn.ZoneoutCell):
    def __call__(self, carry: Any, inputs: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        key, _ = self._resolve(None, None)
        new_carry, y = super().__call__(carry, inputs, rngs=key)
        return new_carry, (y, jnp.broadcast_to(jax.random.key_data(key), (inputs.shape[0], 2)))


NNX_SETUPS = {
    "plain": {},
    "broadcast": {"broadcast_rngs": "dropout"},
}
NNX_STREAMS = {"dropout": lambda: nnx.Rngs(0, dropout=1), "default": lambda: nnx.Rngs(0)}


@pytest.mark.parametrize("stream", NNX_STREAMS)
@pytest.mark.parametrize("setup", NNX_SETUPS)
@pytest.mark.parametrize("name", NNX_CELLS)
def test_nnx_recurrent_equals_reference_loop(name: str, setup: str, stream: str) -> None:
    x = sequences()
    rngs = NNX_STREAMS[stream]()
    cell = KeyedNNXCell(
        NNX_CELLS[name](rngs), input_rate=INPUT_RATE, recurrent_rate=RECURRENT_RATE, rngs=rngs
    )
    assert cell.rngs is not None and cell.rngs.tag == "dropout"
    rnn = nnx.RNN(cell, return_carry=True, **NNX_SETUPS[setup])
    seen = []
    for _ in range(2):
        carry, (y, keys) = rnn(x)
        chex.assert_trees_all_equal(keys, jnp.broadcast_to(keys[:, :1], keys.shape))
        key = jax.random.wrap_key_data(keys[0, 0])
        start = cell.cell.initialize_carry(x[:, 0].shape, nnx.Rngs(0))
        ref_carry, ref_y = variational_reference(
            cell.cell, start, x, key, INPUT_RATE, RECURRENT_RATE
        )
        np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(carry, ref_carry, rtol=1e-6, atol=1e-6)
        seen.append(tuple(np.asarray(keys[0, 0])))
    assert seen[0] != seen[1]  # each call, a new sequence key


class NNXEcho(nnx.RNNCellBase):
    """``Echo`` in NNX: outputs what it reads; it resets ``h`` to ones."""

    def __call__(self, carry: Any, inputs: jax.Array) -> tuple[Any, jax.Array]:  # type: ignore[override]
        c, h = carry
        return (c, jnp.ones_like(h)), jnp.concatenate([inputs, c, h], axis=-1)

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None) -> Any:  # type: ignore[override]
        ones = jnp.ones((*input_shape[:-1], HIDDEN))
        return (3 * ones, ones)

    @property
    def num_feature_axes(self) -> int:
        return 1


@pytest.mark.parametrize("stream", NNX_STREAMS)
@pytest.mark.parametrize("setup", NNX_SETUPS)
def test_nnx_recurrent_masks_per_sequence_and_example(setup: str, stream: str) -> None:
    x = jnp.ones((16, STEPS, FEATURES))
    cell = dxn.RecurrentDropoutCell(
        NNXEcho(),
        input_rate=INPUT_RATE,
        recurrent_rate=RECURRENT_RATE,
        rngs=NNX_STREAMS[stream](),
    )
    rnn = nnx.RNN(cell, return_carry=True, **NNX_SETUPS[setup])
    carry, y = rnn(x)
    assert_variational(y)
    chex.assert_trees_all_equal(carry, (jnp.full((16, HIDDEN), 3.0), jnp.ones((16, HIDDEN))))
    assert not bool((rnn(x)[1] == y).all())  # the next call, new masks
    y_jit = nnx.jit(lambda rnn, x: rnn(x)[1])(rnn, x)
    assert_variational(y_jit)


def test_nnx_initial_carry_keeps_masks_unless_broadcast() -> None:
    # Without broadcast_rngs the masks last until initialize_carry (a sequence fed in
    # chunks); with broadcast_rngs='dropout' each call gets new masks.
    x = jnp.ones((16, STEPS, FEATURES))
    for setup, same in (("plain", True), ("broadcast", False)):
        cell = dxn.RecurrentDropoutCell(NNXEcho(), recurrent_rate=0.5, rngs=nnx.Rngs(dropout=0))
        rnn = nnx.RNN(cell, **NNX_SETUPS[setup])
        start = cell.initialize_carry(x[:, 0].shape)
        first, second = rnn(x, initial_carry=start), rnn(x, initial_carry=start)
        assert bool((first == second).all()) == same


def test_nnx_recurrent_under_vmap_and_scan_over_layers() -> None:
    # nnx.vmap over examples (one stream per example) and nnx.scan over two stacked RNN layers.
    x = sequences((4, STEPS, HIDDEN))

    class Layer(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            inner = nnx.LSTMCell(HIDDEN, HIDDEN, rngs=rngs)
            self.rnn = nnx.RNN(dxn.RecurrentDropoutCell(inner, recurrent_rate=0.3, rngs=rngs))

        def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
            out = self.rnn(h)
            return out, out

    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs: nnx.Rngs) -> Layer:
        return Layer(rngs)

    layers = create(nnx.Rngs(0))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def forward(h: jax.Array, layer: Layer) -> tuple[jax.Array, jax.Array]:
        return layer(h)

    y, per_layer = forward(x, layers)
    assert y.shape == x.shape and per_layer.shape == (2, *x.shape)
    assert bool(jnp.isfinite(y).all())

    state_axes = nnx.StateAxes({nnx.RngState: 0, ...: None})  # type: ignore[arg-type]
    cell = dxn.RecurrentDropoutCell(NNXEcho(), recurrent_rate=0.5, rngs=nnx.Rngs(dropout=0))

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=(state_axes, 0))
    def per_example(cell: Any, row: jax.Array) -> jax.Array:
        return nnx.RNN(cell)(row[None])[0]  # type: ignore[no-any-return]

    echoed = per_example(cell, jnp.ones((4, STEPS, FEATURES)))
    h = echoed[..., FEATURES + HIDDEN :]
    chex.assert_trees_all_equal(h, jnp.broadcast_to(h[:, :1], h.shape))


def test_nnx_recurrent_train_eval_and_inference() -> None:
    x, rngs = sequences(), nnx.Rngs(0)
    cell = dxn.RecurrentDropoutCell(
        nnx.GRUCell(FEATURES, HIDDEN, rngs=rngs), input_rate=0.5, rngs=rngs
    )
    rnn = nnx.RNN(cell)
    rnn.eval()
    count = cell.rngs.count[...] if cell.rngs is not None else None
    chex.assert_trees_all_equal(rnn(x), nnx.RNN(cell.cell)(x))
    assert cell.rngs is not None and cell.rngs.count[...] == count  # no key drawn
    rnn.train()
    assert not bool((rnn(x) == nnx.RNN(cell.cell)(x)).all())


def test_nnx_forwards_initialize_carry_and_feature_axes() -> None:
    rngs = nnx.Rngs(0)
    inner = nnx.LSTMCell(FEATURES, HIDDEN, rngs=rngs)
    for cell in (dxn.RecurrentDropoutCell(inner, recurrent_rate=0.2), dxn.ZoneoutCell(inner, 0.1)):
        shape = (2, FEATURES)
        chex.assert_trees_all_equal(
            cell.initialize_carry(shape, nnx.Rngs(1)), inner.initialize_carry(shape, nnx.Rngs(1))
        )
        assert cell.num_feature_axes == inner.num_feature_axes == 1


@pytest.mark.parametrize("transform", ["eager", "jit"])
def test_nnx_zoneout_equals_reference_loop(transform: str) -> None:
    x, rate, rngs = sequences(), 0.3, nnx.Rngs(0)
    cell = KeyedNNXZoneout(nnx.LSTMCell(FEATURES, HIDDEN, rngs=rngs), rate, rngs=rngs)
    rnn = nnx.RNN(cell, return_carry=True)
    run = nnx.jit(lambda rnn, x: rnn(x)) if transform == "jit" else (lambda rnn, x: rnn(x))
    carry, (y, keys) = run(rnn, x)
    step_keys = [jax.random.wrap_key_data(keys[0, t]) for t in range(STEPS)]
    assert len({tuple(np.asarray(keys[0, t])) for t in range(STEPS)}) == STEPS  # new per step
    start = cell.cell.initialize_carry(x[:, 0].shape, nnx.Rngs(0))
    ref_carry, ref_y = zoneout_reference(cell.cell, start, x, step_keys, rate)
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(carry, ref_carry, rtol=1e-6, atol=1e-6)


def test_nnx_zoneout_inference_is_the_expectation() -> None:
    x, rate, rngs = sequences(), 0.3, nnx.Rngs(0)
    cell = dxn.ZoneoutCell(nnx.SimpleCell(FEATURES, HIDDEN, rngs=rngs), rate, deterministic=True)
    y = nnx.RNN(cell)(x)
    h = cell.cell.initialize_carry(x[:, 0].shape, nnx.Rngs(0))
    for t in range(STEPS):
        new, _ = cell.cell(h, x[:, t])
        h = dx.zoneout(None, h, new, rate, deterministic=True)
        np.testing.assert_allclose(y[:, t], h, rtol=1e-6, atol=1e-6)


# --- training: an LSTM with variational dropout ---------------------------------------------


def test_linen_lstm_with_variational_dropout_trains() -> None:
    # Synthetic task with fixed seeds: predict the mean of the first feature over a
    # 12-step sequence from the last output. Bound: the final loss is below a third
    # of the initial loss (it falls to about a tenth).
    x = jax.random.normal(jax.random.key(0), (256, 12, 3))
    target = x[:, :, 0].mean(axis=1, keepdims=True)

    class Model(nn.Module):
        train: bool

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            cell = dxl.RecurrentDropoutCell(
                nn.LSTMCell(32), input_rate=0.1, recurrent_rate=0.25, deterministic=not self.train
            )
            h = nn.RNN(cell, split_rngs=BROADCAST)(x)
            return nn.Dense(1)(h[:, -1])  # type: ignore[no-any-return]

    params = Model(False).init(jax.random.key(1), x)["params"]
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    def loss_fn(params: Any, key: Any, train: bool) -> jax.Array:
        rngs = {} if key is None else {"dropout": key}
        prediction = Model(train).apply({"params": params}, x, rngs=rngs)
        return jnp.mean((prediction - target) ** 2)

    @jax.jit
    def step(params: Any, opt_state: Any, key: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss_fn)(params, key, True)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    initial = float(loss_fn(params, None, False))
    for i in range(150):
        params, opt_state = step(params, opt_state, jax.random.key(100 + i))
    final = float(loss_fn(params, None, False))
    assert final < initial / 3, (initial, final)


# --- per-layer rates under scan ------------------------------------------------------------


def test_linen_per_layer_drop_path_rates_under_nn_scan_one_compile() -> None:
    depth, batch = 6, 64
    x = jnp.ones((batch, 4))
    keys = jax.random.split(jax.random.key(0), depth)
    body_traces = []

    class Block(nn.Module):
        @nn.compact
        def __call__(self, h: jax.Array, xs: tuple[Any, Any]) -> tuple[jax.Array, jax.Array]:
            rate, key = xs
            body_traces.append(rate)
            branch = dxl.DropPath(rate, deterministic=False)(jnp.ones_like(h), rng=key)
            return h + branch, branch

    stack = nn.scan(Block, variable_broadcast="params", length=depth)()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(rates: jax.Array) -> jax.Array:
        return stack.apply({}, x, (rates, keys))[1]  # type: ignore[no-any-return]

    for max_rate in (0.1, 0.5):
        rates = jnp.linspace(0.0, max_rate, depth)
        branches = run(rates)
        for layer in range(depth):  # layer l drops with its own rate, exactly
            expected = dx.drop_path(keys[layer], jnp.ones_like(x), rates[layer])
            chex.assert_trees_all_equal(branches[layer], expected)
    assert len(body_traces) <= 2  # the body is traced once per scan, not once per layer


def test_nnx_per_layer_drop_path_rates_under_nnx_scan_one_compile() -> None:
    depth, batch = 6, 64
    x = jnp.ones((batch, 4))
    keys = jax.random.split(jax.random.key(0), depth)

    @nnx.jit
    @chex.assert_max_traces(n=1)
    def run(rates: jax.Array) -> jax.Array:
        @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
        def forward(h: jax.Array, rate: jax.Array, key: Any) -> tuple[jax.Array, jax.Array]:
            branch = dxn.DropPath(rate)(jnp.ones_like(h), rngs=key)  # a traced rate per layer
            return h + branch, branch

        return forward(x, rates, keys)[1]  # type: ignore[no-any-return]

    for max_rate in (0.1, 0.5):
        rates = jnp.linspace(0.0, max_rate, depth)
        branches = run(rates)
        for layer in range(depth):
            expected = dx.drop_path(keys[layer], jnp.ones_like(x), rates[layer])
            chex.assert_trees_all_equal(branches[layer], expected)


# --- bad input ---------------------------------------------------------------------------


def test_linen_bad_cells_and_rates_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"RecurrentDropoutCell: cell must be .*construct it first"):
        dxl.RecurrentDropoutCell(nn.LSTMCell)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ZoneoutCell: cell must be a Flax Linen recurrent cell"):
        dxl.ZoneoutCell("lstm", 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lacks them"):
        dxl.RecurrentDropoutCell(nn.Dense(3))
    with pytest.raises(TypeError, match=r"NNX module: use dropoutx\.nnx"):
        dxl.RecurrentDropoutCell(nnx.GRUCell(2, 3, rngs=nnx.Rngs(0)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RecurrentDropoutCell \(recurrent_rate\).*rate=1\.5"):
        dxl.RecurrentDropoutCell(nn.GRUCell(3), recurrent_rate=1.5)
    with pytest.raises(ValueError, match=r"RecurrentDropoutCell \(input_rate\).*rate=-0\.1"):
        dxl.RecurrentDropoutCell(nn.GRUCell(3), input_rate=-0.1)
    with pytest.raises(ValueError, match=r"linen\.ZoneoutCell.*rate=2\.0"):
        dxl.ZoneoutCell(nn.GRUCell(3), 2.0)
    with pytest.raises(ValueError, match=r"linen\.SpatialDropout.*rate=1\.5"):
        dxl.SpatialDropout(1.5)
    with pytest.raises(ValueError, match=r"linen\.DropBlock.*block_size"):
        dxl.DropBlock(0.1, block_size=0)


def test_nnx_bad_cells_and_rates_are_rejected() -> None:
    rngs = nnx.Rngs(0)
    with pytest.raises(TypeError, match=r"RecurrentDropoutCell: cell must be .*construct it first"):
        dxn.RecurrentDropoutCell(nnx.LSTMCell)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Linen module: use dropoutx\.linen"):
        dxn.ZoneoutCell(nn.LSTMCell(3), 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lacks them"):
        dxn.RecurrentDropoutCell(nnx.Linear(2, 3, rngs=rngs))
    with pytest.raises(ValueError, match=r"RecurrentDropoutCell \(recurrent_rate\).*rate=1\.5"):
        dxn.RecurrentDropoutCell(nnx.GRUCell(2, 3, rngs=rngs), recurrent_rate=1.5)
    with pytest.raises(ValueError, match=r"nnx\.ZoneoutCell.*rate=-1\.0"):
        dxn.ZoneoutCell(nnx.GRUCell(2, 3, rngs=rngs), -1.0)
    with pytest.raises(ValueError, match=r"nnx\.SpatialDropout.*rate=1\.5"):
        dxn.SpatialDropout(1.5)
    with pytest.raises(ValueError, match=r"nnx\.DropBlock.*block_size"):
        dxn.DropBlock(0.1, block_size=0)


def test_missing_keys_name_the_fix() -> None:
    x = sequences()
    cell = dxn.RecurrentDropoutCell(nnx.GRUCell(FEATURES, HIDDEN, rngs=nnx.Rngs(0)), input_rate=0.2)
    with pytest.raises(ValueError, match=r"no `rngs` argument"):
        nnx.RNN(cell)(x)
    # A Linen cell called by hand with no 'dropout' rng.
    linen_cell = dxl.RecurrentDropoutCell(nn.GRUCell(HIDDEN), input_rate=0.2, deterministic=False)
    carry = linen_cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
    variables = linen_cell.init({"params": jax.random.key(0)}, carry, x[:, 0])
    with pytest.raises(Exception, match=r"rngs=\{'dropout'"):
        linen_cell.apply(variables, carry, x[:, 0])
