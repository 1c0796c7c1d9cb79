"""Sharding checks, run in a subprocess with 8 simulated CPU devices.

``python tests/sharding_checks.py [NAME ...]`` runs the named checks (all by
default) and prints one line ``SHARDING_CHECKS_JSON {...}`` mapping each name to
``"ok"`` or the reason it failed. ``tests/test_sharding.py`` runs it, because the
device count is fixed when JAX starts its backend, and the main pytest session
has already started it with one device. Importing this module starts nothing.

For every transform, on a 4 x 2 ``('data', 'model')`` mesh, each check proves:

- the output has the input's sharding;
- the compiled per-device program contains no collective (all-gather,
  all-reduce, all-to-all, collective-permute, reduce-scatter,
  collective-broadcast);
- no array in that program has more elements than one shard of the input, so
  each device generates only its own part of the mask or noise (for
  attention: than one device's part of the attention weights);
- the values equal those of the same call on one device with the same key,
  bit for bit (attention outputs, which go through matrix products whose
  per-device sums may round otherwise, to within 1e-6, and their keep masks
  bit for bit).

It does so under ``jax.jit`` with ``NamedSharding`` arguments and no context
mesh (``jit``), and under ``jax.set_mesh`` with ``AxisType.Auto`` (``auto``) and
``AxisType.Explicit`` (``explicit``) axes. The ``shard_map`` checks cover
:func:`dropoutx.shard_key`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator

import assertions
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import dropoutx as dx
from dropoutx._sharding import shard_key

NUM_DEVICES = 8
MESH_SHAPE = (4, 2)
MESH_AXES = ("data", "model")
MESH_KINDS = ("jit", "auto", "explicit")
COLLECTIVES = (
    "all-gather",
    "all-reduce",
    "all-to-all",
    "collective-permute",
    "reduce-scatter",
    "collective-broadcast",
)
_ARRAY_SHAPE = re.compile(r"\b(?:pred|[sufc]\d+|bf16|f8\w*)\[([0-9,]*)\]")
_SCHEDULE = optax.linear_schedule(0.5, 0.0, transition_steps=100)


@dataclasses.dataclass(frozen=True)
class Case:
    """A call ``fn(key, x, *extra)`` on ``x`` of ``shape`` sharded as ``spec``."""

    fn: Callable[..., jax.Array]
    shape: tuple[int, ...] = (64, 32)
    spec: tuple[str | None, ...] = ("data", "model")  # of a PartitionSpec
    dtype: type = jnp.float32
    extra: tuple[float, ...] = ()  # traced scalar arguments
    key_batch: bool = False  # one key per row, sharded like the rows
    # The most elements any per-device array may have, when that is not one
    # shard of x (attention weights are [batch, heads, q, k] per device).
    local_elements: int | None = None
    # Relative tolerance of the comparison with the unsharded call: 0 (bit for
    # bit) but for matrix products, whose per-device sums may round otherwise.
    rtol: float = 0.0
    # The dtype and per-device shape of what neighbours share, where the case
    # must make it once, by a fusion of its own: packed mask words ("u32", one
    # per 32 elements).
    made_once: tuple[str, tuple[int, ...]] | None = None


def _loss_grad(dropout: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The gradient of ``sum(dropout(x) ** 2) / 2``, which depends on ``x``."""
    return jax.grad(lambda x: (dropout(x) ** 2).sum() / 2)


def _self_attention(key: jax.Array, x: jax.Array, *rate: jax.Array, **options: bool) -> jax.Array:
    """Self-attention of ``x`` (``[batch, length, heads, depth]``) with dropout 0.3."""
    dropout_rate = rate[0] if rate else 0.3
    return dx.dot_product_attention(x, x, x, dropout_rng=key, dropout_rate=dropout_rate, **options)


def _attention_keep_mask(key: jax.Array, x: jax.Array, **options: bool) -> jax.Array:
    """Which attention weights were kept, read off through one-hot values.

    With ``value[b, k, h] = e_k`` the output ``[batch, q, heads, k]`` is the
    dropped weights, which are zero exactly where the mask dropped them (the
    softmax weights themselves are positive). The weights' values may round
    differently on a device than on one (see ``rtol``); the mask may not.
    """
    length = x.shape[1]
    one_hot = x[..., :1] * 0 + jnp.eye(length, dtype=x.dtype)[:, None, :]  # sharded as x
    dropped = dx.dot_product_attention(x, x, one_hot, dropout_rng=key, dropout_rate=0.3, **options)
    return dropped != 0


# Attention inputs sharded over the batch ('data') and the heads ('model'):
# each device holds [2, 16, 2, 8] of x and computes [2, 2, 16, 16] weights.
_ATTENTION = {
    "shape": (8, 16, 4, 8),
    "spec": ("data", None, "model", None),
    "local_elements": 2 * 2 * 16 * 16,
}
# Outputs that go through a product with real values: equal up to rounding.
_ATTENTION_OUTPUT = {**_ATTENTION, "rtol": 1e-6}


CASES: dict[str, Case] = {
    "inverted_dropout": Case(lambda k, x: dx.inverted_dropout(k, x, 0.3)),
    "vanilla_dropout": Case(lambda k, x: dx.vanilla_dropout(k, x, 0.3)),
    "annealed_dropout": Case(lambda k, x: dx.annealed_dropout(k, x, 20, _SCHEDULE)),
    "gaussian_dropout": Case(lambda k, x: dx.gaussian_dropout(k, x, 0.3)),
    "gaussian_noise": Case(lambda k, x: dx.gaussian_noise(k, x, 0.5)),
    "inverted_dropout_bfloat16": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3), dtype=jnp.bfloat16
    ),
    "inverted_dropout_traced_rate": Case(
        lambda k, x, rate: dx.inverted_dropout(k, x, rate), extra=(0.3,)
    ),
    "annealed_dropout_traced_step": Case(
        lambda k, x, step: dx.annealed_dropout(k, x, step, _SCHEDULE), extra=(20.0,)
    ),
    "gaussian_noise_traced_stddev": Case(
        lambda k, x, stddev: dx.gaussian_noise(k, x, stddev), extra=(0.5,)
    ),
    # broadcast_dims along a sharded axis: the mask has size 1 there and each
    # device broadcasts its copy locally (flax.nnx.Dropout fails here).
    "inverted_dropout_broadcast_data_axis": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3, broadcast_dims=(0,))
    ),
    "inverted_dropout_broadcast_model_axis": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3, broadcast_dims=(1,))
    ),
    "vanilla_dropout_broadcast_data_axis": Case(
        lambda k, x: dx.vanilla_dropout(k, x, 0.3, broadcast_dims=(0,))
    ),
    "gaussian_dropout_broadcast_data_axis": Case(
        lambda k, x: dx.gaussian_dropout(k, x, 0.3, broadcast_dims=(0,))
    ),
    "drop_path": Case(lambda k, x: dx.drop_path(k, x, 0.3)),
    "channel_dropout_nhwc": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3, broadcast_dims=(1, 2)),
        shape=(8, 6, 6, 4),
        spec=("data", None, None, "model"),
    ),
    # Masks whose last axis holds whole 32-element words go through the packed
    # words: 16 words per row, 8 per device along 'model'. At (8, 96) a
    # device holds 1.5 words, so each element hashes its own block; at (8, 64)
    # only explicit axes show that a device holds whole words. The values are
    # the unsharded call's in every case.
    "inverted_dropout_packed_words": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3),
        shape=(16, 512),
        made_once=("u32", (4, 8)),
    ),
    "grad_inverted_dropout_packed_words": Case(
        lambda k, x: _loss_grad(lambda x: dx.inverted_dropout(k, x, 0.3))(x),
        shape=(16, 512),
        made_once=("u32", (4, 8)),
    ),
    "inverted_dropout_words_split_between_devices": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3), shape=(8, 96)
    ),
    "inverted_dropout_whole_words_per_device": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3), shape=(8, 64)
    ),
    # A last axis of 200 held whole by each device: with explicit axes, words
    # whose last one in a row is cut short (the decoded row runs to 224), else
    # one block per element.
    "inverted_dropout_rows_end_inside_a_word": Case(
        lambda k, x: dx.inverted_dropout(k, x, 0.3),
        shape=(8, 200),
        spec=("data", None),
        local_elements=2 * 224,
    ),
    # Noise hashes one block per element: rows of 51 elements per device.
    "gaussian_noise_odd_shards": Case(lambda k, x: dx.gaussian_noise(k, x, 0.5), shape=(8, 102)),
    "grad_inverted_dropout": Case(
        lambda k, x: _loss_grad(lambda x: dx.inverted_dropout(k, x, 0.3))(x)
    ),
    "grad_inverted_dropout_broadcast_data_axis": Case(
        lambda k, x: _loss_grad(lambda x: dx.inverted_dropout(k, x, 0.3, broadcast_dims=(0,)))(x)
    ),
    "grad_gaussian_dropout": Case(
        lambda k, x: _loss_grad(lambda x: dx.gaussian_dropout(k, x, 0.3))(x)
    ),
    "vmap_inverted_dropout_key_per_row": Case(
        jax.vmap(lambda k, x: dx.inverted_dropout(k, x, 0.3)), key_batch=True
    ),
    "vmap_gaussian_noise_key_per_row": Case(
        jax.vmap(lambda k, x: dx.gaussian_noise(k, x, 0.5)), key_batch=True
    ),
    # The attention weights' dropout mask, shared by the batch and head axes
    # (both sharded) or one per weight; the values equal the unsharded call's.
    "dot_product_attention_mask": Case(_attention_keep_mask, **_ATTENTION),
    "dot_product_attention_mask_unbroadcast": Case(
        lambda k, x: _attention_keep_mask(k, x, broadcast_dropout=False), **_ATTENTION
    ),
    "dot_product_attention": Case(_self_attention, **_ATTENTION_OUTPUT),
    "dot_product_attention_traced_rate": Case(_self_attention, extra=(0.3,), **_ATTENTION_OUTPUT),
    "grad_dot_product_attention": Case(
        lambda k, x: _loss_grad(lambda x: _self_attention(k, x))(x), **_ATTENTION_OUTPUT
    ),
}


def _mesh(kind: str) -> jax.sharding.Mesh:
    axis_type = AxisType.Explicit if kind == "explicit" else AxisType.Auto
    return jax.make_mesh(MESH_SHAPE, MESH_AXES, axis_types=(axis_type,) * len(MESH_AXES))


@contextlib.contextmanager
def _context(kind: str, mesh: jax.sharding.Mesh) -> Iterator[None]:
    """``jax.set_mesh(mesh)`` for the auto and explicit kinds; nothing for jit."""
    if kind == "jit":
        yield
    else:
        with jax.set_mesh(mesh):
            yield


def _compile(fn: Callable[..., jax.Array], *args: jax.Array) -> tuple[jax.Array, str]:
    """Runs ``jax.jit(fn)`` and returns its output and per-device compiled HLO."""
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled(*args), compiled.as_text()


def assert_no_collectives(hlo: str) -> None:
    found = sorted({name for name in COLLECTIVES if name in hlo})
    assert not found, f"collectives in the compiled program: {found}"


def assert_local_only(hlo: str, shard_shape: tuple[int, ...]) -> None:
    """No array in the per-device program is bigger than one shard.

    An array of the shard's rank is no longer than the shard along any axis
    (so a mask shared along a sharded axis is split along the others); any
    other array has at most as many elements as the shard.
    """
    too_big = set()
    for dims in set(_ARRAY_SHAPE.findall(hlo)):
        shape = tuple(int(d) for d in dims.split(",") if d)
        if len(shape) == len(shard_shape):
            if any(n > limit for n, limit in zip(shape, shard_shape, strict=True)):
                too_big.add(shape)
        elif np.prod(shape) > np.prod(shard_shape):
            too_big.add(shape)
    assert not too_big, f"arrays larger than one shard {shard_shape}: {sorted(too_big)}"


def assert_sharding(y: jax.Array, x: jax.Array) -> None:
    assert y.sharding.is_equivalent_to(x.sharding, x.ndim), (
        f"output sharding {y.sharding} differs from the input's {x.sharding}"
    )


def _inputs(case: Case) -> tuple[jax.Array, ...]:
    """Unsharded key (or keys), x and extra arguments for ``case``."""
    key = jax.random.key(42)
    if case.key_batch:
        key = jax.random.split(key, case.shape[0])
    size = int(np.prod(case.shape))
    x = (np.arange(size, dtype=np.float32).reshape(case.shape) - size / 2) / size
    extra = tuple(jnp.float32(value) for value in case.extra)
    return (key, jnp.asarray(x, case.dtype), *extra)


def check_case(kind: str, case: Case) -> None:
    key, x, *extra = _inputs(case)
    expected = np.asarray(jax.jit(case.fn)(key, x, *extra))
    mesh = _mesh(kind)
    with _context(kind, mesh):
        x_sharded = jax.device_put(x, NamedSharding(mesh, P(*case.spec)))
        if case.key_batch:
            key = jax.device_put(key, NamedSharding(mesh, P(case.spec[0])))
        y, hlo = _compile(case.fn, key, x_sharded, *extra)
    assert_sharding(y, x_sharded)
    assert_no_collectives(hlo)
    if case.made_once is not None:
        assertions.assert_fusion_makes(hlo, *case.made_once)
    if case.local_elements is None:
        assert_local_only(hlo, x_sharded.addressable_shards[0].data.shape)
    else:
        assert_local_only(hlo, (case.local_elements,))
    if case.rtol:
        np.testing.assert_allclose(np.asarray(y), expected, rtol=case.rtol, atol=case.rtol)
    else:
        np.testing.assert_array_equal(np.asarray(y), expected)


def check_eager(kind: str) -> None:
    """Without an outer ``jit``, each transform's own jitted core shards its mask."""
    key, x = _inputs(Case(dx.inverted_dropout))
    mesh = _mesh(kind)
    for fn in (dx.inverted_dropout, dx.vanilla_dropout, dx.gaussian_dropout):
        expected = np.asarray(fn(key, x, 0.3, broadcast_dims=(0,)))
        with _context(kind, mesh):
            x_sharded = jax.device_put(x, NamedSharding(mesh, P("data", "model")))
            y = fn(key, x_sharded, 0.3, broadcast_dims=(0,))
        assert_sharding(y, x_sharded)
        np.testing.assert_array_equal(np.asarray(y), expected)


def check_keep_mask(kind: str) -> None:
    """``keep_mask`` takes a shape, not an array, so its sharding is requested.

    With automatic axes, a sharding constraint on the mask propagates back to
    the counters; with explicit axes, ``jax.sharding.auto_axes`` does the same.
    """
    key, shape, spec = jax.random.key(42), (64, 32), P("data", "model")
    expected = np.asarray(dx.keep_mask(key, shape, 0.3))
    mesh = _mesh(kind)

    def mask(key: jax.Array) -> jax.Array:
        if kind == "explicit":
            make = jax.sharding.auto_axes(lambda k: dx.keep_mask(k, shape, 0.3), out_sharding=spec)
            return make(key)
        return jax.lax.with_sharding_constraint(
            dx.keep_mask(key, shape, 0.3), NamedSharding(mesh, spec)
        )

    with _context(kind, mesh):
        y, hlo = _compile(mask, key)
    assert y.sharding.is_equivalent_to(NamedSharding(mesh, spec), 2), y.sharding
    assert_no_collectives(hlo)
    assert_local_only(hlo, (16, 16))
    np.testing.assert_array_equal(np.asarray(y), expected)


def _blocks(y: jax.Array) -> list[np.ndarray]:
    """The 16 x 16 blocks of a 64 x 32 array, in row-major device order."""
    y = np.asarray(y)
    return [y[16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)] for i in range(4) for j in range(2)]


def _shard_mapped_mask(
    kind: str, key_fn: Callable[[jax.Array], jax.Array]
) -> tuple[jax.Array, str]:
    mesh = _mesh(kind)
    spec = P("data", "model")

    def local(key: jax.Array, x: jax.Array) -> jax.Array:
        return dx.keep_mask(key_fn(key), x.shape, 0.5)

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec), out_specs=spec)
    with _context(kind, mesh):
        x = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, spec))
        return _compile(fn, jax.random.key(42), x)


def check_shard_map_shard_key(kind: str) -> None:
    """``shard_key`` over both axes: one independent mask per block, no communication.

    Block ``(i, j)`` is the mask of ``fold_in(key, 2 * i + j)`` on a 16 x 16
    block, so all eight differ.
    """
    y, hlo = _shard_mapped_mask(kind, lambda k: shard_key(k, ("data", "model")))
    assert_no_collectives(hlo)
    blocks = _blocks(y)
    for index, block in enumerate(blocks):
        expected = dx.keep_mask(jax.random.fold_in(jax.random.key(42), index), (16, 16), 0.5)
        np.testing.assert_array_equal(block, np.asarray(expected))
    distinct = {block.tobytes() for block in blocks}
    assert len(distinct) == len(blocks), f"only {len(distinct)} distinct masks"


def check_shard_map_same_key_repeats(kind: str) -> None:
    """The pitfall ``shard_key`` avoids: one key inside shard_map repeats the mask."""
    y, _ = _shard_mapped_mask(kind, lambda k: k)
    blocks = _blocks(y)
    assert all((block == blocks[0]).all() for block in blocks)


def check_shard_map_data_axis_only() -> None:
    """Data-parallel activations replicated over 'model' keep identical copies.

    ``shard_key(key, 'data')`` does not vary over 'model', so shard_map's
    replication check accepts ``out_specs=P('data')``.
    """
    mesh = _mesh("auto")

    def local(key: jax.Array, x: jax.Array) -> jax.Array:
        return dx.inverted_dropout(shard_key(key, "data"), x, 0.5)

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data"))
    x = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("data")))
    y, hlo = _compile(fn, jax.random.key(42), x)
    assert_no_collectives(hlo)
    rows = np.asarray(y).reshape(4, 16, 32)
    assert len({block.tobytes() for block in rows}) == 4


def check_shard_map_gradient() -> None:
    """Gradients through dropout with ``shard_key`` are the same local mask / keep."""
    mesh = _mesh("auto")
    spec = P("data", "model")

    def local_loss(key: jax.Array, x: jax.Array) -> jax.Array:
        return dx.inverted_dropout(shard_key(key, MESH_AXES), x, 0.5)

    def grad(key: jax.Array, x: jax.Array) -> jax.Array:
        dropout = jax.shard_map(local_loss, mesh=mesh, in_specs=(P(), spec), out_specs=spec)
        return jax.grad(lambda x: dropout(key, x).sum())(x)

    x = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, spec))
    g, hlo = _compile(grad, jax.random.key(42), x)
    assert_no_collectives(hlo)
    y, _ = _compile(
        jax.shard_map(local_loss, mesh=mesh, in_specs=(P(), spec), out_specs=spec),
        jax.random.key(42),
        x,
    )
    np.testing.assert_array_equal(np.asarray(g), np.asarray(y))  # both are mask / keep


def all_checks() -> dict[str, Callable[[], None]]:
    """Every check by name, without running anything."""
    checks: dict[str, Callable[[], None]] = {}
    for kind in MESH_KINDS:
        for name, case in CASES.items():
            checks[f"{kind}-{name}"] = lambda kind=kind, case=case: check_case(kind, case)
        checks[f"{kind}-eager"] = lambda kind=kind: check_eager(kind)
        checks[f"{kind}-keep_mask"] = lambda kind=kind: check_keep_mask(kind)
    for kind in ("auto", "explicit"):
        checks[f"{kind}-shard_map_shard_key"] = lambda kind=kind: check_shard_map_shard_key(kind)
        checks[f"{kind}-shard_map_same_key_repeats"] = lambda kind=kind: (
            check_shard_map_same_key_repeats(kind)
        )
    checks["auto-shard_map_data_axis_only"] = check_shard_map_data_axis_only
    checks["auto-shard_map_gradient"] = check_shard_map_gradient
    return checks


def main(names: list[str]) -> None:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", NUM_DEVICES)
    assert jax.device_count() == NUM_DEVICES, jax.devices()
    checks = all_checks()
    results = {}
    for name in names or checks:
        try:
            checks[name]()
            results[name] = "ok"
        except Exception as error:  # reported, with its traceback, to the test
            results[name] = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
    print("SHARDING_CHECKS_JSON " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
