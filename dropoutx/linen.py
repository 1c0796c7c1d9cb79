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

The rest of the family: :class:`AlphaDropout` (for SELU networks),
:class:`DropPath` (stochastic depth, whole examples) and
:class:`DropConnectDense` (a :class:`flax.linen.Dense` whose kernel, not its
output, is dropped out while training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors
from flax.linen.dtypes import promote_dtype
from jax.typing import ArrayLike

from dropoutx import _validate
from dropoutx._bernoulli import annealed_dropout, inverted_dropout, vanilla_dropout
from dropoutx._family import alpha_dropout, drop_path
from dropoutx._gaussian import gaussian_dropout, gaussian_noise

__all__ = (
    "AlphaDropout",
    "AnnealedDropout",
    "DropConnectDense",
    "DropPath",
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


def _resolve(
    module: nn.Module, call_time: bool | None, rng: Any, concrete: float | None
) -> tuple[Any, bool]:
    """The key and the ``deterministic`` flag to pass to the transform.

    Merges ``deterministic`` from the field and the call (see
    :func:`_merge_deterministic`), then draws a key (``rng`` if given, else
    ``make_rng``) only while training at a rate that is not a concrete 0. Like
    :class:`flax.linen.Dropout`, a module whose rate is a concrete 0 asks for
    no key, so such a model can be applied without a ``'dropout'`` rng; the
    transform is then called as deterministic, which at rate 0 is the
    identity. A traced rate (``concrete is None``) always needs a key while
    training.
    """
    deterministic = _merge_deterministic(module, module.deterministic, call_time)
    if deterministic or concrete == 0.0:
        return rng, True
    return _make_key(module, module.rng_collection, rng), False


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
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        return inverted_dropout(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
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
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        return vanilla_dropout(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
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
        name = f"linen.{type(self).__name__}"
        concrete = _validate.rate(name, self.rate, allow_one=False)
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        return gaussian_dropout(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
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
        concrete = _validate.stddev(f"linen.{type(self).__name__}", self.stddev)
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        return gaussian_noise(key, inputs, self.stddev, deterministic=deterministic)


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


class AlphaDropout(nn.Module):
    """Alpha dropout for self-normalizing networks (SELU), keeping mean 0 and variance 1.

    While training, dropped units are set to SELU's negative saturation
    ``alpha'`` and an affine correction ``y = a * where(mask, x, alpha') + b``
    keeps inputs of mean 0 and variance 1 at mean 0 and variance 1 (Klambauer
    et al. 2017); at inference ``y = x``. Calls :func:`dropoutx.alpha_dropout`.
    Fields and call as :class:`Dropout`.

    Attributes:
      rate: the probability of dropping a unit, in ``[0, 1]``; a Python number
        or a (possibly traced) JAX scalar.
      broadcast_dims: axes that share one mask value (the spatial axes, for
        feature alpha dropout).
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jax.random.normal(jax.random.key(1), (1000, 1000))
      >>> layer = dxl.AlphaDropout(0.2)
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((1000, 1000), dtype('float32'))
      >>> bool(abs(y.mean()) < 0.01), bool(abs(y.var() - 1) < 0.01)  # mean 0, variance 1
      (True, True)
      >>> bool((layer.apply({}, x, deterministic=True) == x).all())
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
        """Applies alpha dropout to ``inputs`` while training.

        Args:
          inputs: the activations, of any floating dtype; typically the output
            of ``jax.nn.selu``.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        return alpha_dropout(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
            broadcast_dims=self.broadcast_dims,
        )


class DropPath(nn.Module):
    """Drop path (stochastic depth): drop whole examples of a residual branch.

    While training, one keep decision per example (axis 0) applies to the whole
    example, ``y[i] = where(mask[i], x[i] / (1 - rate), 0)`` (no rescaling if
    ``scale_by_keep`` is false); at inference ``y = x`` (Huang et al. 2016).
    Use it on a residual branch: ``x + DropPath(rate)(branch(x))``. Calls
    :func:`dropoutx.drop_path`. Fields and call as :class:`Dropout`, with
    ``scale_by_keep`` in place of ``broadcast_dims``.

    Attributes:
      rate: the probability of dropping an example, in ``[0, 1]``; a Python
        number or a (possibly traced) JAX scalar.
      scale_by_keep: if true, scale kept examples by ``1 / (1 - rate)``.
      deterministic: if true, return the input unchanged; may instead be given
        at call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from dropoutx import linen as dxl
      >>> x = jnp.ones((8, 3, 4))
      >>> layer = dxl.DropPath(0.5, deterministic=False)
      >>> y = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, y.dtype
      ((8, 3, 4), dtype('float32'))
      >>> per_example = y.reshape(8, -1)
      >>> bool((per_example == per_example[:, :1]).all())  # whole examples
      True
      >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / 0.5
      [0.0, 2.0]
    """

    rate: ArrayLike
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.rate(f"linen.{type(self).__name__}", self.rate)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Drops whole examples of ``inputs`` while training.

        Args:
          inputs: the activations, of any floating dtype, batch on axis 0.
          deterministic: if true, return ``inputs`` unchanged; exactly one of
            the field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        return drop_path(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
            scale_by_keep=self.scale_by_keep,
        )


class DropConnectDense(nn.Module):
    """A :class:`flax.linen.Dense` layer whose kernel is dropped out while training.

    DropConnect (Wan et al. 2013): while training, ``y = x @ W + b`` with ``W
    = inverted_dropout(key, kernel, rate)``, one mask for the kernel per call,
    shared by every example of the batch; at inference ``y = x @ kernel + b``,
    exactly what :class:`flax.linen.Dense` computes. The parameters
    (``kernel`` of shape ``(in_features, features)`` and ``bias``), their
    initialisers and names are those of :class:`flax.linen.Dense`, so the two
    load each other's checkpoints. The mask comes from
    :func:`dropoutx.inverted_dropout`. ``deterministic`` and the key are
    resolved as in :class:`Dropout`.

    Attributes:
      features: the number of output features.
      rate: the probability of dropping each kernel entry, in ``[0, 1]``; a
        Python number or a (possibly traced) JAX scalar.
      use_bias: whether to add a bias to the output.
      dtype: the dtype of the computation (default: inferred from the input
        and the parameters).
      param_dtype: the dtype of the parameters.
      precision: the precision of the matmul, see ``jax.lax.Precision``.
      kernel_init: the kernel initialiser (``lecun_normal``, as in ``Dense``).
      bias_init: the bias initialiser (zeros, as in ``Dense``).
      deterministic: if true, use the kernel unchanged; may instead be given at
        call time.
      rng_collection: the rng collection the key is drawn from.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropoutx import linen as dxl
      >>> layer = dxl.DropConnectDense(4, rate=0.5)
      >>> x = jnp.ones((2, 3))
      >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
      >>> jax.tree.map(jnp.shape, variables["params"])
      {'bias': (4,), 'kernel': (3, 4)}
      >>> y = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
      >>> y.shape, y.dtype
      ((2, 4), dtype('float32'))
      >>> bool((y[0] == y[1]).all())  # one kernel mask for the whole batch
      True
      >>> h = layer.apply(variables, x, deterministic=True)  # inference: a plain Dense
      >>> bool((h == nn.Dense(4).apply(variables, x)).all())
      True
    """

    features: int
    rate: ArrayLike
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _validate.rate(f"linen.{type(self).__name__}", self.rate)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        """Applies the dense layer, with a dropped-out kernel while training.

        Args:
          inputs: the inputs, features on the last axis.
          deterministic: if true, use the kernel unchanged; exactly one of the
            field and this argument must be set.
          rng: a key to use instead of ``make_rng(rng_collection)``.

        Returns:
          An array of shape ``inputs.shape[:-1] + (features,)``.
        """
        concrete = _validate.rate(f"linen.{type(self).__name__}", self.rate)
        kernel = self.param(
            "kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        key, deterministic = _resolve(self, deterministic, rng, concrete)
        kernel = inverted_dropout(key, kernel, self.rate, deterministic=deterministic)
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        outputs = jax.lax.dot_general(
            inputs, kernel, (((jnp.ndim(inputs) - 1,), (0,)), ((), ())), precision=self.precision
        )
        if bias is not None:
            outputs += jnp.reshape(bias, (1,) * (outputs.ndim - 1) + (-1,))
        return outputs
