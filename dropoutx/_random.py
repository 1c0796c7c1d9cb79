"""Random bits that XLA can fuse with the masking that consumes them.

``jax.random.bits`` on a threefry key computes, for element ``i`` of the
row-major flattened shape, the Threefry-2x32 hash (Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3") of the 64-bit counter ``i``
under the key, and XORs the two output words. On CPU it does so through a
primitive whose lowering writes intermediate buffers, so a dropout layer
touches several times the memory of a copy.

Here the same hash is written with plain ``jnp`` integer operations over an
iota counter. The result is bit-identical to ``jax.random.bits(key, shape)``
with ``jax_threefry_partitionable=True`` (the default since JAX 0.5), but every
step is elementwise, so XLA fuses generation, comparison and selection into one
pass, and under SPMD each shard computes its own counters without
communication. The bits do not depend on that flag: with
``jax_threefry_partitionable=False``, ``jax.random.bits`` changes and these do
not. Keys of other implementations (rbg, unsafe_rbg, philox, threefry4x32),
and shapes of 2**32 elements or more, use ``jax.random.bits`` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# The sharding of generated bits: ``jax.typeof(x).sharding``, a spec, or None.
Sharding = NamedSharding | PartitionSpec | None

# Rotation distances of Threefry-2x32, alternating between the two groups of
# four rounds, and the key-schedule parity constant (Salmon et al. 2011).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA
_THREEFRY = "threefry2x32"


def _rotate_left(value: jax.Array, distance: int) -> jax.Array:
    return (value << np.uint32(distance)) | (value >> np.uint32(32 - distance))


def _threefry2x32(
    key_words: tuple[jax.Array, jax.Array], injected: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """The 20-round Threefry-2x32 block function, elementwise over counters.

    ``injected`` is the counter after the first key injection, ``(counter[0] +
    key[0], counter[1] + key[1])``; the caller adds the key so that it can
    build the counter around it (see :func:`_keyed_counter`).
    """
    schedule = (key_words[0], key_words[1], key_words[0] ^ key_words[1] ^ np.uint32(_KEY_PARITY))
    x0, x1 = injected
    for injection in range(1, 6):
        for distance in _ROTATIONS[(injection - 1) % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[injection % 3]
        x1 = x1 + schedule[(injection + 1) % 3] + np.uint32(injection)
    return x0, x1


def replicated_along(sharding: Sharding, axes: tuple[int, ...]) -> Sharding:
    """``sharding`` with the array axes ``axes`` unsharded (e.g. size-1 broadcast axes).

    A mask shared along a sharded axis has size 1 there, so it cannot be split
    over that mesh axis; each device holds the one value and broadcasts it to
    its shard locally.
    """
    if sharding is None or not axes:
        return sharding
    spec = sharding.spec if isinstance(sharding, NamedSharding) else sharding
    spec = PartitionSpec(*(None if axis in axes else entry for axis, entry in enumerate(spec)))
    return sharding.update(spec=spec) if isinstance(sharding, NamedSharding) else spec


def _keyed_counter(
    key_word: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None
) -> jax.Array:
    """``key_word`` plus the row-major flat index of every element, as uint32.

    The flat index is the sum over axes of ``iota * stride``. Each term is a
    small array (the axis's length, size 1 elsewhere) added to ``key_word`` in
    turn, so every full-size intermediate depends on the key: none is a
    constant that XLA could hoist out of a scanned loop and keep alive as an
    activation-sized buffer. Addition wraps mod 2**32, so the order of the terms
    does not change the result (the flat index itself is exact for size <
    2**32).
    """
    total = key_word
    for axis, length in enumerate(shape):
        term_shape = tuple(length if other == axis else 1 for other in range(len(shape)))
        others = tuple(other for other in range(len(shape)) if other != axis)
        iota = jax.lax.broadcasted_iota(
            jnp.uint32, term_shape, axis, out_sharding=replicated_along(out_sharding, others)
        )
        total = total + iota * np.uint32(math.prod(shape[axis + 1 :]))
    return jnp.broadcast_to(total, shape, out_sharding=out_sharding)


def random_bits(key: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None) -> jax.Array:
    """``uint32`` bits equal to ``jax.random.bits(key, shape)``, fusibly.

    (Equal under the default ``jax_threefry_partitionable=True``; the bits
    themselves do not depend on the flag, see the module docstring.)

    ``out_sharding`` (e.g. ``jax.typeof(x).sharding``) places the counters, so
    that on a mesh with explicit axes each device hashes only its own shard;
    with automatic axes the partitioner does the same by propagation. The bits
    do not depend on it.
    """
    size = math.prod(shape)
    if size == 0:  # the strides of an empty shape can exceed 2**32: (0, 2**33)
        return jnp.broadcast_to(np.uint32(0), shape, out_sharding=out_sharding)
    if str(jax.random.key_impl(key)) != _THREEFRY or size >= 2**32:
        return jax.random.bits(key, shape, jnp.uint32, out_sharding=out_sharding)
    key_data = jax.random.key_data(key)
    key_words = (key_data[0], key_data[1])
    # The counter's high word is 0 for every element (size < 2**32), so after
    # the first key injection it is the scalar key word itself.
    injected = (key_words[0], _keyed_counter(key_words[1], shape, out_sharding))
    word0, word1 = _threefry2x32(key_words, injected)
    return word0 ^ word1


def drop_threshold(rate: jax.Array) -> jax.Array:
    """The ``uint32`` threshold below which bits mean "drop", for rate < 1.

    ``P(bits < threshold) = floor(rate * 2**32) / 2**32``: the drop probability
    equals the float32 rate to within 2**-32.
    """
    rate = rate.astype(jnp.float32)
    scaled = jnp.floor(jnp.where(rate < 1, rate, 0) * np.float32(2**32))
    return jnp.clip(scaled, 0, None).astype(jnp.uint32)


def draw_keep_mask(
    key: jax.Array,
    shape: tuple[int, ...],
    rate: jax.Array,
    broadcast_dims: tuple[int, ...],
    out_sharding: Sharding = None,
) -> jax.Array:
    """Boolean mask of ``shape``, ``True`` with probability ``1 - rate``.

    One value is drawn per position of the shape with ``broadcast_dims`` set to
    1, then broadcast. A rate of 1, or one outside ``[0, 1)`` (or NaN), drops
    everything. ``out_sharding`` is the sharding of the mask (see
    :func:`random_bits`); it may shard a broadcast axis.
    """
    mask_shape = tuple(1 if axis in broadcast_dims else n for axis, n in enumerate(shape))
    bits = random_bits(key, mask_shape, replicated_along(out_sharding, broadcast_dims))
    rate = jnp.asarray(rate, jnp.float32)
    kept = (bits >= drop_threshold(rate)) & (rate >= 0) & (rate < 1)
    return jnp.broadcast_to(kept, shape, out_sharding=out_sharding)


def standard_normal(
    key: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None
) -> jax.Array:
    """float32 N(0, 1) samples equal to ``jax.random.normal(key, shape)``.

    The inverse-CDF method: 23 random mantissa bits give a uniform number on
    ``(-1, 1)``, and ``sqrt(2) * erfinv(u)`` maps it to a standard normal.
    ``out_sharding`` places the samples, as in :func:`random_bits`.
    """
    bits = random_bits(key, shape, out_sharding)
    one_bits = np.float32(1.0).view(np.uint32)
    unit = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | one_bits, jnp.float32) - 1
    low = np.nextafter(np.float32(-1), np.float32(0))
    uniform = jnp.maximum(low, unit * (np.float32(1) - low) + low)
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(uniform)
