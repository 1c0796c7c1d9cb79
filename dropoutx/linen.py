"""Flax Linen modules for the dropoutx transforms.

``from dropoutx import linen as dxl``. Each module resolves the
``deterministic`` flag (with :func:`flax.linen.merge_param`, as
:class:`flax.linen.Dropout` does) and the PRNG key (``rng`` if given, else
``self.make_rng(self.rng_collection)``), then calls the matching function of
:mod:`dropoutx`, which holds the maths and validates the arguments.

:class:`Dropout` is a drop-in replacement for :class:`flax.linen.Dropout`: the
same fields, the same call, no parameters or variables of its own, and the
same output at inference. While training it draws a different (but equally
distributed) mask from the same key, keeps bf16 and fp16 unbiased, and accepts
a traced ``rate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
from flax import errors
from jax.typing import ArrayLike

from dropoutx import _validate
from dropoutx._bernoulli import annealed_dropout, inverted_dropout, vanilla_dropout
from dropoutx._gaussian import gaussian_dropout, gaussian_noise

__all__ = (
    "AnnealedDropout",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "VanillaDropout",
)


def _owner(module: nn.Module) -> str:
    """``dropoutx.linen.Dropout`` plus the module's name, for error messages."""
    name = f" (module {module.name!r})" if module.name is not None else ""
    return f"dropoutx.linen.{type(module).__name__}{name}"


def _merge_deterministic(module: nn.Module, field: bool | None, call_time: bool | None) -> bool:
    """:func:`flax.linen.merge_param` for ``deterministic``, with errors that name the fix."""
    if field is None and call_time is None:
        raise ValueError(
            f'{_owner(module)}: parameter "deterministic" must be passed to the '
            f"constructor or at call time, and was passed to neither. Set it once, "
            f"e.g. {type(module).__name__}(..., deterministic=not train) or "
            f"module(x, deterministic=not train)."
        )
    if field is not None and call_time is not None:
        raise ValueError(
            f'{_owner(module)}: parameter "deterministic" was passed to the '
            f"constructor (deterministic={field!r}) and at call time "
            f"(deterministic={call_time!r}). Should be passed just once."
        )
    value = field if call_time is None else call_time
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{_owner(module)}: deterministic must be a Python bool, but it was "
            f"traced (e.g. passed positionally through nn.remat, nn.jit or "
            f"jax.jit). It selects the code path, so it must be static: set it as "
            f"a module field, or mark it static (static_argnums for nn.remat / "
            f"jax.jit, static_argnames for jax.jit)."
        )
    return bool(value)


def _make_key(module: nn.Module, rng_collection: str, rng: Any) -> Any:
    """``rng`` if given, else ``module.make_rng(rng_collection)`` with a clear error."""
    if rng is not None:
        return rng
    try:
        return module.make_rng(rng_collection)
    except errors.InvalidRngError as error:
        raise errors.InvalidRngError(  # type: ignore[no-untyped-call]
            f"{_owner(module)}: deterministic=False needs a PRNG key from the "
            f"{rng_collection!r} collection, and none was provided. Pass "
            f"rngs={{{rng_collection!r}: jax.random.key(0)}} to Module.apply() "
            f"(or init()), pass rng=key at call time, or use deterministic=True "
            f"for inference."
        ) from error


def _needs_key(deterministic: bool, concrete: float | None) -> bool:
    """Whether a key must be drawn: not at inference, nor at a known zero rate.

    Like :class:`flax.linen.Dropout`, a module whose rate is a concrete 0 asks
    for no key, so such a model can be applied without a ``'dropout'`` rng.
    A traced rate (``concrete is None``) always needs one while training.
    """
    return not deterministic and concrete != 0.0


class Dropout(nn.Module):
    """Inverted dropout, a drop-in replacement for :class:`flax.linen.Dropout`.

    While training, ``y = where(mask, x / (1 - rate), 0)`` with ``mask ~
    Bernoulli(1 - rate)`` shared along ``broadcast_dims``; at inference ``y =
    x``. Calls :func:`dropoutx.inverted_dropout`.

    ``deterministic`` is merged from the field and the call as
    :func:`flax.linen.merge_param` does (exactly one must be set). The key is
    ``rng`` if given, else ``self.make_rng(rng_collection)``: pass
    ``rngs={'dropout': key}`` to ``apply``.

    Attributes:
      rate: the probability of dropping a unit (not the keep rate), in ``[0,
        1]``; a Python number or a (possibly traced) JAX scalar.
      broadcast_dims: axes that share one mask value (e.g. the spatial axes,
        for channel dropout).
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropoutx import linen as dxl
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool):
      ...         x = nn.Dense(16)(x)
      ...         return dxl.Dropout(0.5, deterministic=not train)(x)
      >>> x = jnp.ones((4, 3))
      >>> variables = MLP().init(jax.random.key(0), x, train=False)
      >>> y = MLP().apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, y.dtype
      ((4, 16), dtype('float32'))
      >>> h = MLP().apply(variables, x, train=False)  # inference: no dropout
      >>> bool(jnp.all((y == 0) | jnp.isclose(y, 2 * h)))  # kept units scaled by 1 / 0.5
      True
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.rate(f"linen.{type(self).__name__}", self.rate)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Applies a random dropout mask to ``inputs``.

        Args:
          inputs: the activations to mask, of any floating dtype.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          The masked inputs, scaled by ``1 / (1 - rate)``, in the input dtype.
        """
        deterministic = _merge_deterministic(self, self.deterministic, deterministic)
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        needs_key = _needs_key(deterministic, concrete)
        key = _make_key(self, self.rng_collection, rng) if needs_key else rng
        return inverted_dropout(
            key,
            inputs,
            self.rate,
            deterministic=not needs_key,
            broadcast_dims=self.broadcast_dims,
        )


class VanillaDropout(nn.Module):
    """Vanilla dropout: no rescaling while training, ``x * (1 - rate)`` at inference.

    While training, ``y = where(mask, x, 0)``; at inference ``y = x * (1 -
    rate)``, the weight-scaling rule of Srivastava et al. (2014). Calls
    :func:`dropoutx.vanilla_dropout`. Fields and call as :class:`Dropout`.

    Attributes:
      rate: the probability of dropping a unit, in ``[0, 1]``.
      broadcast_dims: axes that share one mask value.
      deterministic: if true, scale by ``1 - rate`` instead of masking; may
        instead be given at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.full((2, 8), 4.0)
      >>> layer = dxl.VanillaDropout(0.25)
      >>> layer.apply({}, x, deterministic=True)[0, :2]  # weight scaling at inference
      Array([3., 3.], dtype=float32)
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> sorted(set(y.ravel().tolist()))  # no rescaling while training
      [0.0, 4.0]
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.rate(f"linen.{type(self).__name__}", self.rate)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Masks ``inputs`` while training, scales them by ``1 - rate`` at inference.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: if true, return ``inputs * (1 - rate)``; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        deterministic = _merge_deterministic(self, self.deterministic, deterministic)
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        # At a concrete rate of 0 both modes are the identity, so no key is drawn.
        needs_key = _needs_key(deterministic, concrete)
        key = _make_key(self, self.rng_collection, rng) if needs_key else rng
        return vanilla_dropout(
            key,
            inputs,
            self.rate,
            deterministic=not needs_key,
            broadcast_dims=self.broadcast_dims,
        )


class GaussianDropout(nn.Module):
    """Gaussian dropout: multiply by ``N(1, rate / (1 - rate))`` noise while training.

    While training, ``y = x * (1 + sqrt(rate / (1 - rate)) * eps)`` with
    ``eps ~ N(0, 1)`` shared along ``broadcast_dims``; at inference ``y = x``.
    Calls :func:`dropoutx.gaussian_dropout`. Fields and call as
    :class:`Dropout`.

    Attributes:
      rate: the drop rate whose Bernoulli variance the noise matches, in ``[0,
        1)``.
      broadcast_dims: axes that share one noise value.
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.ones((1000, 100), jnp.bfloat16)
      >>> layer = dxl.GaussianDropout(0.5, deterministic=False)
      >>> y = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((1000, 100), dtype(bfloat16))
      >>> bool(abs(y.astype(jnp.float32).mean() - 1) < 0.02)  # E[y] = x
      True
    """

    rate: ArrayLike
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.rate(f"linen.{type(self).__name__}", self.rate, allow_one=False)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Multiplies ``inputs`` by Gaussian noise of mean 1 while training.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        deterministic = _merge_deterministic(self, self.deterministic, deterministic)
        name = f"linen.{type(self).__name__}"
        concrete = _validate.rate(name, self.rate, allow_one=False)
        needs_key = _needs_key(deterministic, concrete)
        key = _make_key(self, self.rng_collection, rng) if needs_key else rng
        return gaussian_dropout(
            key,
            inputs,
            self.rate,
            deterministic=not needs_key,
            broadcast_dims=self.broadcast_dims,
        )


class GaussianNoise(nn.Module):
    """Additive Gaussian noise: ``x + stddev * eps`` while training, ``x`` at inference.

    Calls :func:`dropoutx.gaussian_noise`. Fields and call as :class:`Dropout`,
    with ``stddev`` in place of ``rate`` and no ``broadcast_dims``.

    Attributes:
      stddev: the noise standard deviation, finite and ``>= 0``; a Python
        number or a (possibly traced) JAX scalar.
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.zeros((1000, 100))
      >>> y = dxl.GaussianNoise(0.1).apply(
      ...     {}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> y.dtype, bool(abs(y.std() - 0.1) < 0.001)
      (dtype('float32'), True)
      >>> bool((dxl.GaussianNoise(0.1).apply({}, x, deterministic=True) == x).all())
      True
    """

    stddev: ArrayLike
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.stddev(f"linen.{type(self).__name__}", self.stddev)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Adds Gaussian noise to ``inputs`` while training.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        deterministic = _merge_deterministic(self, self.deterministic, deterministic)
        concrete = _validate.stddev(f"linen.{type(self).__name__}", self.stddev)
        needs_key = _needs_key(deterministic, concrete)
        key = _make_key(self, self.rng_collection, rng) if needs_key else rng
        return gaussian_noise(key, inputs, self.stddev, deterministic=not needs_key)


class AnnealedDropout(nn.Module):
    """Inverted dropout at ``rate = schedule(step)``, with ``step`` given at call time.

    While training, ``y = inverted_dropout(key, x, schedule(step))``; at
    inference ``y = x``. Calls :func:`dropoutx.annealed_dropout`. Linen modules
    hold no mutable state here, so pass the training step at each call, e.g.
    the optimizer's step count; it may be traced, so one jitted train step
    serves the whole run. Fields and call as :class:`Dropout`, with
    ``schedule`` in place of ``rate`` and a fourth call argument, ``step``
    (positional too, since ``nn.vmap`` drops keyword arguments).

    Attributes:
      schedule: a callable ``step -> rate``, e.g. any optax schedule such as
        ``optax.linear_schedule(0.5, 0.0, 10_000)`` (Rennie et al. 2014).
      broadcast_dims: axes that share one mask value.
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from dropoutx import linen as dxl
      >>> layer = dxl.AnnealedDropout(optax.linear_schedule(0.5, 0.0, 100))
      >>> x = jnp.ones((4, 8))
      >>> rngs = {"dropout": jax.random.key(0)}
      >>> y = layer.apply({}, x, deterministic=False, step=0, rngs=rngs)
      >>> sorted(set(y.ravel().tolist()))  # rate 0.5 at step 0
      [0.0, 2.0]
      >>> y = layer.apply({}, x, deterministic=False, step=100, rngs=rngs)
      >>> bool((y == x).all())  # the rate has decayed to 0
      True
    """

    schedule: Callable[[Any], ArrayLike]
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.schedule(f"linen.{type(self).__name__}", self.schedule)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: ArrayLike,
        deterministic: bool | None = None,
        rng: Any = None,
        step: ArrayLike | None = None,
    ) -> jax.Array:
        """Applies inverted dropout at the scheduled rate for ``step``.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.
          step: the training step, a Python int or a (possibly traced) JAX
            integer scalar. Required while training, ignored at inference.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        deterministic = _merge_deterministic(self, self.deterministic, deterministic)
        if deterministic:
            return annealed_dropout(rng, inputs, 0, self.schedule, deterministic=True)
        if step is None:
            raise ValueError(
                f"{_owner(self)}: step is required while training; pass the "
                f"training step at call time, e.g. module(x, deterministic=False, "
                f"step=step), where step is the optimizer's step count or your own "
                f"counter (it may be a traced jnp integer)."
            )
        key = _make_key(self, self.rng_collection, rng)
        return annealed_dropout(
            key, inputs, step, self.schedule, broadcast_dims=self.broadcast_dims
        )
