"""One time step of the recurrent-cell wrappers, for Linen and NNX alike.

:class:`dropoutx.linen.RecurrentDropoutCell` and its NNX counterpart run
:func:`variational_step`; the two ``ZoneoutCell`` modules run
:func:`zoneout_step`. The modules resolve the key and the ``deterministic``
flag; these functions hold what happens to the carry. A carry is that of
Flax's cells: an array ``h`` (GRU, MGU and simple cells) or a pair ``(c, h)``
(the LSTM cells).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.typing import ArrayLike

from dropoutx import _bernoulli, _structured


def map_hidden(owner: str, carry: Any, fn: Callable[[Any], Any]) -> Any:
    """``carry`` with ``fn`` applied to its hidden state ``h``; an LSTM's ``c`` is left alone."""
    if isinstance(carry, tuple) and len(carry) == 2:
        c, h = carry
        return (c, fn(h))
    if isinstance(carry, jax.Array):
        return fn(carry)
    raise TypeError(
        f"dropoutx.{owner}: the cell's carry must be an array h (GRU, simple cells) or "
        f"a pair (c, h) (LSTM cells), got {jax.tree.structure(carry)}."
    )


def hidden(owner: str, carry: Any) -> Any:
    """The hidden state ``h`` of a carry: the array itself, or the second of ``(c, h)``."""
    if isinstance(carry, tuple) and len(carry) == 2:
        return carry[1]
    return map_hidden(owner, carry, lambda h: h)  # the array itself, or the error


def variational_step(
    owner: str,
    cell: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    inputs: ArrayLike,
    key: Any,
    input_rate: ArrayLike,
    recurrent_rate: ArrayLike,
    deterministic: bool,
) -> tuple[Any, Any]:
    """``cell`` applied to the carry with its ``h`` dropped out and to dropped-out inputs.

    The two masks come from ``split(key)``, so the same ``key`` at every step
    gives one input mask and one recurrent mask for the whole sequence. The
    carry ``cell`` returns is not masked.
    """
    input_key, recurrent_key = (None, None) if key is None else jax.random.split(key)
    inputs = _bernoulli.inverted_dropout(input_key, inputs, input_rate, deterministic=deterministic)
    read = map_hidden(
        owner,
        carry,
        lambda h: _bernoulli.inverted_dropout(
            recurrent_key, h, recurrent_rate, deterministic=deterministic
        ),
    )
    return cell(read, inputs)


def zoneout_step(
    owner: str,
    cell: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    inputs: ArrayLike,
    key: Any,
    rate: ArrayLike,
    deterministic: bool,
) -> tuple[Any, Any]:
    """``cell``'s step, then :func:`dropoutx.zoneout` on each carry leaf with its own key.

    Returns ``(new_carry, h)``, the zoned carry and its hidden state.
    """
    cell_carry, _ = cell(carry, inputs)
    old_leaves, treedef = jax.tree.flatten(carry)
    new_leaves = jax.tree.leaves(cell_carry)
    count = len(old_leaves)
    keys = [None] * count if key is None else list(jax.random.split(key, count))
    zoned = [
        _structured.zoneout(leaf_key, old, new, rate, deterministic=deterministic)
        for leaf_key, old, new in zip(keys, old_leaves, new_leaves, strict=True)
    ]
    new_carry = jax.tree.unflatten(treedef, zoned)
    return new_carry, hidden(owner, new_carry)
