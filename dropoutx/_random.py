"""Random bits that XLA can fuse with the masking that consumes them.

Both generators below are the 13-round Threefry-2x32 hash (Salmon et al.
2011, "Parallel random numbers: as easy as 1, 2, 3") of a counter under the
key, written with plain ``jnp`` integer operations over iota counters (see
the section comments). Under SPMD each shard computes its own counters without
communication. Neither depends on ``jax_threefry_partitionable``.

- Keep masks (:func:`draw_keep_mask`) take four 16-bit lanes from a block,
  for four neighbouring elements: about a sixth of the hashing of one
  20-round block per element, as ``jax.random.bits``.
- Noise (:func:`standard_normal`) takes one normal sample from each
  element's own block, by the Box-Muller transform.

Keys of other implementations (rbg, unsafe_rbg, philox, threefry4x32), and
shapes beyond the counters, use ``jax.random`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

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
    key_words: tuple[jax.Array, jax.Array],
    injected: tuple[jax.Array, jax.Array],
    rounds: int = 20,
) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block function of ``rounds`` rounds, elementwise over counters.

    ``injected`` is the counter after the first key injection, ``(counter[0] +
    key[0], counter[1] + key[1])``; the caller adds the key so that it can
    build the counter around it (see :func:`_keyed_index`). The key is
    injected again after every fourth round, as in Random123: 13 rounds end
    with three injections and one round after the last.
    """
    schedule = (key_words[0], key_words[1], key_words[0] ^ key_words[1] ^ np.uint32(_KEY_PARITY))
    x0, x1 = injected
    for done in range(1, rounds + 1):
        x0 = x0 + x1
        x1 = _rotate_left(x1, _ROTATIONS[(done - 1) // 4 % 2][(done - 1) % 4]) ^ x0
        if done % 4 == 0:
            injection = done // 4
            x0 = x0 + schedule[injection % 3]
            x1 = x1 + schedule[(injection + 1) % 3] + np.uint32(injection)
    return x0, x1


def _map_spec(sharding: Sharding, entries: Callable[[tuple[Any, ...]], Iterable[Any]]) -> Sharding:
    """``sharding`` with its spec's entries replaced by ``entries(old entries)``."""
    if sharding is None:
        return None
    spec = sharding.spec if isinstance(sharding, NamedSharding) else sharding
    spec = PartitionSpec(*entries(tuple(spec)))
    return sharding.update(spec=spec) if isinstance(sharding, NamedSharding) else spec


def replicated_along(sharding: Sharding, axes: tuple[int, ...]) -> Sharding:
    """``sharding`` with the array axes ``axes`` unsharded (e.g. size-1 broadcast axes).

    A mask shared along a sharded axis has size 1 there, so it cannot be split
    over that mesh axis; each device holds the one value and broadcasts it to
    its shard locally.
    """
    if not axes:
        return sharding
    return _map_spec(
        sharding, lambda entries: (None if axis in axes else e for axis, e in enumerate(entries))
    )


# --- counters --------------------------------------------------------------------------
#
# Masks and noise both hash a counter (r, c // g) per element, with r the
# row-major index over the leading axes and c the index along the last axis:
# the g neighbours along the last axis share one block. A mask takes g = 4
# decisions from a block; noise takes one sample, g = 1.
#
# The block has 13 rounds, not jax.random's 20: Salmon et al. (2011) found 13
# the fewest with which Threefry-2x32 is "Crush-resistant", passing TestU01's
# SmallCrush, Crush and BigCrush batteries in all their tests, and chose 20 as
# the default to keep a safety margin. Masks and noise need that statistical
# quality, not secrecy, and the hash is most of their cost
# (tests/test_generator.py and tests/test_statistics.py check the values
# themselves).
ROUNDS = 13


def _shards_of_last_axis(sharding: Sharding, ndim: int) -> int | None:
    """How many shards split the last axis, if the sharding says so; else ``None``.

    Only a mesh whose axes are all explicit says so: an automatic axis may
    split the axis without appearing in the type.
    """
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh
    if isinstance(sharding, PartitionSpec):
        mesh, spec = jax.sharding.get_abstract_mesh(), sharding
    elif isinstance(sharding, NamedSharding):
        mesh, spec = sharding.mesh, sharding.spec
    else:
        return None
    if mesh.empty or any(kind != AxisType.Explicit for kind in mesh.axis_types):
        return None
    entries = tuple(spec) + (None,) * (ndim - len(spec))
    entry = entries[-1] if ndim else None
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    return math.prod(mesh.shape[name] for name in names)


def _axis_iota(shape: tuple[int, ...], axis: int, sharding: Sharding) -> jax.Array:
    """``0, 1, ...`` as uint32 along ``axis`` of ``shape``, length 1 (and unsharded) elsewhere."""
    others = tuple(other for other in range(len(shape)) if other != axis)
    return jax.lax.broadcasted_iota(
        jnp.uint32,
        tuple(n if other == axis else 1 for other, n in enumerate(shape)),
        axis,
        out_sharding=replicated_along(sharding, others),
    )


def _keyed_index(
    key_word: jax.Array, shape: tuple[int, ...], sharding: Sharding, row_axes: int
) -> jax.Array:
    """``key_word`` plus the row-major index over the first ``row_axes`` axes, as uint32.

    Broadcast to ``shape``; with ``row_axes = len(shape)`` it is the flat
    index of every element. The index is the sum over axes of ``iota *
    stride``. Each term is a small array (the axis's length, size 1
    elsewhere) added to ``key_word`` in turn, so every full-size intermediate
    depends on the key: none is a constant that XLA could hoist out of a
    scanned loop and keep alive as an activation-sized buffer. Addition wraps
    mod 2**32, so the order of the terms does not change the result.
    """
    rows = shape[:row_axes]
    total = key_word
    for axis in range(len(rows)):
        stride = np.uint32(math.prod(rows[axis + 1 :]))
        total = total + _axis_iota(shape, axis, sharding) * stride
    return jnp.broadcast_to(total, shape, out_sharding=sharding)


def _block_counters(
    key_words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    group_of: jax.Array,
    sharding: Sharding,
) -> tuple[jax.Array, jax.Array]:
    """The counters (r, c // g) of ``shape``'s elements, after the first key injection.

    ``group_of`` is ``c // g`` along the last axis (length 1 elsewhere). The
    key is added before broadcasting, so that no full-size term is a constant
    (see :func:`_keyed_index`).
    """
    return (
        _keyed_index(key_words[0], shape, sharding, len(shape) - 1),
        jnp.broadcast_to(group_of + key_words[1], shape, out_sharding=sharding),
    )


def _hashable_key_words(
    key: jax.Array, shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array] | None:
    """The key's two words, or ``None`` where jax.random draws instead.

    That is for keys of other implementations, and for arrays beyond the
    64-bit counter: 2**32 rows or more, or a last axis of 2**32 or more.
    """
    rows, length = math.prod(shape[:-1]), (shape[-1] if shape else 1)
    if str(jax.random.key_impl(key)) != _THREEFRY or rows >= 2**32 or length >= 2**32:
        return None
    key_data = jax.random.key_data(key)
    return key_data[0], key_data[1]


def _over_units(
    draw: Callable[[tuple[int, ...], Sharding], jax.Array],
    shape: tuple[int, ...],
    sharding: Sharding,
) -> jax.Array:
    """``draw(shape without its axes of length 1, its sharding)``, reshaped to ``shape``.

    Axes of length 1 do not count, so (32, 1, 1) draws what (32,) draws, and
    a broadcast axis (length 1 here) does not become the last axis, whose
    neighbours share blocks.
    """
    units = tuple(axis for axis, n in enumerate(shape) if n != 1)
    values = draw(tuple(shape[axis] for axis in units), _select_axes(sharding, units))
    others = tuple(axis for axis in range(len(shape)) if axis not in units)
    return jnp.reshape(values, shape, out_sharding=replicated_along(sharding, others))


# --- the keep mask ---------------------------------------------------------------------
#
# One block gives 64 bits: four 16-bit lanes, four keep decisions. Element (r,
# c) takes lane c % 4 of block (r, c // 4).
#
# Eight blocks make one packed uint32 word of 32 keep bits. Where the last
# axis allows it (see _packs_words), each word hashes its eight blocks
# in one elementwise computation, which XLA keeps as a buffer of 1/8 byte per
# element, and the masking reads it; a row that ends inside a word ignores the
# word's bits past its end. Elsewhere each element computes its own block,
# with the same result.

LANE_BITS = 16
_LANE_MASK = np.uint32(2**LANE_BITS - 1)
_LANES = 4  # lanes per Threefry block
_BLOCKS_PER_WORD = 8
_WORD_BITS = _LANES * _BLOCKS_PER_WORD


def keep_threshold(rate: jax.Array) -> jax.Array:
    """The ``uint32`` threshold ``t``: a lane is kept iff it is at least ``t``.

    ``t = round(rate * 2**16)``, so the drop probability is ``t / 2**16``,
    within ``2**-17`` of the float32 rate; ``t = 2**16`` (rates from ``1 -
    2**-17``) drops everything. The transforms still scale kept units by ``1 /
    (1 - rate)``, so ``E[y] = x * (1 - t / 2**16) / (1 - rate)``: a relative
    bias of at most ``2**-17 / (1 - rate)``. Rates outside ``[0, 1)`` are the
    caller's to handle.
    """
    scaled = jnp.floor(rate.astype(jnp.float32) * np.float32(2**LANE_BITS) + np.float32(0.5))
    return jnp.clip(scaled, 0, 2**LANE_BITS).astype(jnp.uint32)


def _packs_words(shape: tuple[int, ...], sharding: Sharding) -> bool:
    """Whether the mask goes through packed words of 32 elements.

    Every shard of the last axis must hold whole words, or the axis must be
    whole on every device and at least 4 times the part of its last word that
    is cut off (decoding that part is wasted work). With a visible sharding
    that is exact. Otherwise the partitioner may split the axis over any
    number of devices up to all of them, so it is assumed to.
    """
    if not shape:
        return False
    length = shape[-1]
    words = -(-length // _WORD_BITS)
    shards = _shards_of_last_axis(sharding, len(shape))
    if shards is None:
        shards = jax.device_count()
    cut_off = words * _WORD_BITS - length
    if cut_off:
        return shards == 1 and 4 * cut_off <= length
    return words % shards == 0


def _lane_bits(
    key_words: tuple[jax.Array, jax.Array], shape: tuple[int, ...], sharding: Sharding
) -> jax.Array:
    """Each element's 16-bit lane, one Threefry block per element (any shape)."""
    column = _axis_iota(shape, len(shape) - 1, sharding)
    injected = _block_counters(key_words, shape, column >> np.uint32(2), sharding)
    word0, word1 = _threefry2x32(key_words, injected, ROUNDS)
    lane = column & np.uint32(_LANES - 1)
    word = jnp.where(lane < 2, word0, word1)
    return (word >> (np.uint32(LANE_BITS) * (lane & np.uint32(1)))) & _LANE_MASK


def _packed_keep(
    key_words: tuple[jax.Array, jax.Array],
    shape: tuple[int, ...],
    threshold: jax.Array,
    sharding: Sharding,
) -> jax.Array:
    """The keep mask through packed words (the last one of a row may be cut short)."""
    words = -(-shape[-1] // _WORD_BITS)
    word_shape = (*shape[:-1], words)
    last = len(word_shape) - 1
    word = _axis_iota(word_shape, last, sharding)
    packed = jnp.zeros((), jnp.uint32)
    for block in range(_BLOCKS_PER_WORD):
        group_of = word * np.uint32(_BLOCKS_PER_WORD) + np.uint32(block)
        injected = _block_counters(key_words, word_shape, group_of, sharding)
        word0, word1 = _threefry2x32(key_words, injected, ROUNDS)
        lanes = (word0 & _LANE_MASK, word0 >> LANE_BITS, word1 & _LANE_MASK, word1 >> LANE_BITS)
        for lane, bits in enumerate(lanes):
            kept = (bits >= threshold).astype(jnp.uint32)
            packed = packed | (kept << np.uint32(block * _LANES + lane))
    # XLA would fuse the words into the masking, which reads each word 32
    # times and would hash its eight blocks again for every read. It does
    # not duplicate an integer division by a value it cannot prove constant,
    # so dividing by such a value, always 1, makes the words one buffer of
    # 1/8 byte per element, computed once.
    packed = jax.lax.div(packed, jnp.minimum(key_words[0], np.uint32(1)) | np.uint32(1))
    bit = jax.lax.broadcasted_iota(jnp.uint32, (1,) * (last + 1) + (_WORD_BITS,), last + 1)
    kept = ((packed[..., None] >> bit) & np.uint32(1)).astype(bool)
    kept = kept.reshape((*shape[:-1], words * _WORD_BITS), out_sharding=sharding)
    return jax.lax.slice_in_dim(kept, 0, shape[-1], axis=last)


def _keep_bits(
    key: jax.Array, shape: tuple[int, ...], threshold: jax.Array, sharding: Sharding
) -> jax.Array:
    """Boolean ``lane >= threshold`` for every element of ``shape`` (see the section comment)."""
    if math.prod(shape) == 0:  # the strides of an empty shape can exceed 2**32: (0, 2**33)
        return jnp.broadcast_to(False, shape, out_sharding=sharding)
    key_words = _hashable_key_words(key, shape)
    if key_words is None:
        # 32 bits per element from jax.random.bits, compared with the same
        # 16-bit threshold in the top bits, so the keep probability is the same.
        bits = jax.random.bits(key, shape, jnp.uint32, out_sharding=sharding)
        return bits >= (threshold << np.uint32(32 - LANE_BITS))
    if not shape:
        return (_lane_bits(key_words, (1,), None) >= threshold).reshape(())
    if _packs_words(shape, sharding):
        return _packed_keep(key_words, shape, threshold, sharding)
    return _lane_bits(key_words, shape, sharding) >= threshold


def draw_keep_mask(
    key: jax.Array,
    shape: tuple[int, ...],
    rate: jax.Array,
    broadcast_dims: tuple[int, ...],
    out_sharding: Sharding = None,
) -> jax.Array:
    """Boolean mask of ``shape``, ``True`` with probability ``1 - t / 2**16``.

    ``t`` is :func:`keep_threshold`'s ``round(rate * 2**16)``.

    One value is drawn per position of the shape with ``broadcast_dims`` set to
    1, then broadcast. A rate of 1, or one outside ``[0, 1)`` (or NaN), drops
    everything. ``out_sharding`` is the sharding of the mask (e.g.
    ``jax.typeof(x).sharding``); it may shard a broadcast axis. It places the
    counters, so that on a mesh with explicit axes each device hashes only its
    own shard; with automatic axes the partitioner does the same by
    propagation. The values do not depend on it.
    """
    mask_shape = tuple(1 if axis in broadcast_dims else n for axis, n in enumerate(shape))
    rate = jnp.asarray(rate, jnp.float32)
    threshold = keep_threshold(rate)
    kept = _over_units(
        lambda units, sharding: _keep_bits(key, units, threshold, sharding),
        mask_shape,
        replicated_along(out_sharding, broadcast_dims),
    )
    kept = kept & (rate >= 0) & (rate < 1)
    return jnp.broadcast_to(kept, shape, out_sharding=out_sharding)


def _select_axes(sharding: Sharding, axes: tuple[int, ...]) -> Sharding:
    """``sharding`` for the array made of the axes ``axes`` only (the others have length 1)."""
    return _map_spec(
        sharding, lambda entries: (entries[axis] if axis < len(entries) else None for axis in axes)
    )


# --- Gaussian noise --------------------------------------------------------------------
#
# Each element takes one block, at the counter (row, column), and one N(0, 1)
# sample from it by the Box-Muller transform (Box and Muller 1958): word 0
# gives a radius r = sqrt(-2 ln u) with u uniform on (0, 1], word 1 an angle
# phi uniform on [-pi/2, pi/2), and the sample is r sin(phi). (Box and
# Muller's r cos(theta), with theta uniform on the whole circle, depends on
# theta only through cos(theta), whose arcsine distribution sin(phi) shares;
# so r sin(phi) is standard normal too, and one odd polynomial computes it
# with no reduction to quarter turns.) Nothing is shared between elements, so
# the noise fuses into whatever consumes it with nothing kept in memory.
# (Taking a second coordinate for the neighbour halves the hashing but needs
# the pair kept as a buffer of 4 bytes per element, since XLA's CPU fusions
# have one output each: faster in cache, slower above it; benchmarks/README.md
# has the figures.)
#
# u = (k + 1/2) 2**-31 for the top 31 bits k of word 0, so the radius reaches
# sqrt(64 ln 2) = 6.66 and the tail is fine-grained: u is exact in float32 for
# k < 2**23, which covers every radius above 3.33. (Inverting the normal's CDF
# from 23 bits, as jax.random.normal does, stops at 5.3.) The angle is
# pi s / 2**32 for word 1 read as a signed integer s.
#
# The logarithm and the sine are polynomials of this module's own, together
# about a quarter cheaper on XLA's CPU backend than jnp.log and a sine and
# cosine reduced to an eighth of a turn. In float32 the sample stays within a
# few roundings of the exact transform of the same bits (tests/test_core.py).

# ln(1 + t) / t for t in [sqrt(1/2) - 1, sqrt(2) - 1), as the float32
# coefficients of t**0 ... t**8: a least-squares fit at 4096 Chebyshev nodes
# of the interval, rounded to float32. With them :func:`_log` is within
# 1.7e-7 of ln u, relative, for every float32 u in (0, 1] (tests/test_core.py
# checks every mantissa).
_LOG_COEFFICIENTS = tuple(
    np.float32(c)
    for c in (
        1.0,
        -0.49999988,
        0.33334184,
        -0.25002155,
        0.19956978,
        -0.16560696,
        0.14949095,
        -0.14377332,
        0.08743946,
    )
)
# The float32 nearest sqrt(1/2), as its bits: where the mantissa range starts.
_SQRT_HALF_BITS = np.int32(0x3F3504F3)
_MANTISSA_BITS = 23


def _log(u: jax.Array, times: float = 1.0) -> jax.Array:
    """``times * ln u`` of positive normal float32 values, as ``e ln 2 + ln m`` scaled.

    ``u = 2**e m`` with ``m`` in ``[sqrt(1/2), sqrt(2))``: subtracting the bits
    of ``sqrt(1/2)`` from ``u``'s bits leaves ``e`` in the exponent field
    (shifted down arithmetically) and ``m``'s mantissa offset below it.
    ``ln m = t P(t)`` with ``t = m - 1`` and ``P`` of degree 8
    (``_LOG_COEFFICIENTS``), by Horner. ``times`` must be a power of two: it
    scales the constants instead of the result, which saves a multiplication
    and, op by op, gives ``times * _log(u)`` bit for bit (XLA's fusions may
    round either a little differently).
    """
    scaled = [np.float32(times) * c for c in _LOG_COEFFICIENTS]
    offset = jax.lax.bitcast_convert_type(u, jnp.int32) - _SQRT_HALF_BITS
    exponent = offset >> np.int32(_MANTISSA_BITS)
    mantissa_bits = (offset & np.int32(2**_MANTISSA_BITS - 1)) + _SQRT_HALF_BITS
    t = jax.lax.bitcast_convert_type(mantissa_bits, jnp.float32) - np.float32(1)
    series = t * scaled[-1] + scaled[-2]
    for coefficient in scaled[-3::-1]:
        series = series * t + coefficient
    return exponent.astype(jnp.float32) * np.float32(times * math.log(2)) + t * series


def _sin(angle: jax.Array) -> jax.Array:
    """``sin`` of float32 angles in ``[-pi/2, pi/2]``, by its Taylor polynomial to ``x**13``.

    The first omitted term, ``(pi/2)**15 / 15!``, is below 7e-10, far under
    float32's rounding.
    """
    square = angle * angle
    coefficients = [np.float32((-1) ** (p // 2) / math.factorial(p)) for p in range(13, 0, -2)]
    series = square * coefficients[0] + coefficients[1]
    for coefficient in coefficients[2:]:
        series = series * square + coefficient
    return angle * series


def _box_muller(word0: jax.Array, word1: jax.Array) -> jax.Array:
    """The float32 sample ``r sin(phi)`` of each block."""
    top = (word0 >> np.uint32(1)).astype(jnp.int32)
    uniform = top.astype(jnp.float32) * np.float32(2**-31) + np.float32(2**-32)
    radius = jnp.sqrt(_log(uniform, -2.0))
    signed = jax.lax.bitcast_convert_type(word1, jnp.int32)
    return radius * _sin(signed.astype(jnp.float32) * np.float32(math.pi / 2**32))


def _normals(key: jax.Array, shape: tuple[int, ...], sharding: Sharding) -> jax.Array:
    """float32 N(0, 1) samples for every element of ``shape`` (see the section comment)."""
    if math.prod(shape) == 0:  # the strides of an empty shape can exceed 2**32: (0, 2**33)
        return jnp.zeros(shape, jnp.float32, out_sharding=sharding)
    key_words = _hashable_key_words(key, shape)
    if key_words is None:
        return jax.random.normal(key, shape, jnp.float32, out_sharding=sharding)
    if not shape:
        return _normals(key, (1,), None).reshape(())
    column = _axis_iota(shape, len(shape) - 1, sharding)
    injected = _block_counters(key_words, shape, column, sharding)
    return _box_muller(*_threefry2x32(key_words, injected, ROUNDS))


def standard_normal(
    key: jax.Array, shape: tuple[int, ...], out_sharding: Sharding = None
) -> jax.Array:
    """float32 N(0, 1) samples of ``shape`` (see the section comment).

    Axes of length 1 do not count. ``out_sharding`` places the samples, as in
    :func:`draw_keep_mask`. Keys of other implementations, and arrays beyond
    the counter, draw ``jax.random.normal(key, shape)``.
    """
    return _over_units(lambda units, sharding: _normals(key, units, sharding), shape, out_sharding)
