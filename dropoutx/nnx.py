"""Flax NNX modules for the dropoutx transforms.

``from dropoutx import nnx as dxn``. Every module is a subclass of one private
base, ``_Stochastic``, which holds the call: it takes the ``deterministic``
flag (call argument, else attribute) and the PRNG key (call ``rngs``, else
the stream forked at construction) and hands both to the module's transform,
one public function of :mod:`dropoutx`, which holds the maths and validates the
arguments. Each module has its own ``__init__``, so its signature is its own.
``model.train()``, ``model.eval()`` and ``nnx.view(model, deterministic=...)``
set the flag, as for :class:`flax.nnx.Dropout`.

:class:`Dropout` is a drop-in replacement for :class:`flax.nnx.Dropout`: the
same constructor and call, the same state (the forked ``rngs`` stream, so the
parameters of the surrounding model do not change), and the same output at
inference. While training it draws a different (but equally distributed) mask,
keeps bf16 and fp16 unbiased, and accepts a ``rate`` held as a JAX array.

Beyond Flax's layer: :class:`VanillaDropout`, :class:`GaussianDropout`,
:class:`GaussianNoise`, :class:`AnnealedDropout` (whose step counter is NNX
state), :class:`AlphaDropout`, :class:`DropPath` and
:class:`DropConnectLinear`, a :class:`flax.nnx.Linear` with a dropped-out
kernel.

Sequence and structured dropout: :class:`SpatialDropout`, :class:`DropBlock`,
and two wrappers of a Flax recurrent cell for :class:`flax.nnx.RNN`:
:class:`RecurrentDropoutCell` (variational dropout, one mask per sequence) and
:class:`ZoneoutCell`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from jax.typing import ArrayLike

import dropoutx as dx
from dropoutx import _cells, _traced, _validate

__all__ = (
    "AlphaDropout",
    "AnnealedDropout",
    "AnnealingStep",
    "DropBlock",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "RecurrentDropoutCell",
    "SpatialDropout",
    "VanillaDropout",
    "ZoneoutCell",
)

RngsLike = nnx.Rngs | nnx.RngStream | jax.Array | np.ndarray
# The initialisers of flax.nnx.Linear, for DropConnectLinear.
_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
_DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


class _Stochastic(nnx.Module):
    """The base of every module here: holds the flag and the stream, calls the transform.

    Like Flax's ``_Conv``, the base holds the call and each public module
    supplies what differs. A subclass has its own ``__init__``, so its
    signature is its own: it stores its arguments, then calls
    ``super().__init__(deterministic, rng_collection, rngs)``, which checks
    them (:meth:`_check`) and forks the stream. It names the public
    function of :mod:`dropoutx` it applies in ``_function``, or, if that
    function takes other arguments than ``rate`` and ``broadcast_dims``,
    overrides :meth:`_transform`; it overrides :meth:`_check` if its
    arguments need other checks than ``rate`` in ``[0, 1]``. Modules hold no
    maths. The rate is checked when the module is built and then once per
    call, by the function.
    """

    _function: ClassVar[Callable[..., jax.Array]]

    deterministic: bool | None
    rng_collection: str
    rngs: nnx.RngStream | None
    # Set by the modules that have them; the others override the methods that read them.
    rate: ArrayLike
    broadcast_dims: Sequence[int]

    def __init__(
        self,
        deterministic: bool | None,
        rng_collection: str,
        rngs: nnx.Rngs | nnx.RngStream | None,
    ) -> None:
        """Checks the subclass's arguments, stores the flag and forks the stream.

        The stream is a fork of ``rngs[rng_collection]``, or of ``rngs`` if
        it is a stream.
        """
        self._check()
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs[rng_collection]
        if not isinstance(rngs, nnx.RngStream | None):
            raise TypeError(
                f"{self._owner()}: rngs must be an nnx.Rngs, an nnx.RngStream or None, "
                f"got {type(rngs).__name__}. To use a fixed key, pass it at call time "
                f"(module(x, rngs=key)), or construct with rngs=nnx.Rngs(dropout=key)."
            )
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = nnx.data(None if rngs is None else rngs.fork())

    def _check(self) -> None:
        """Validates the arguments when the module is built: by default ``rate``."""
        _validate.rate(f"nnx.{type(self).__name__}", self.rate)

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        """Calls the module's public function with the resolved key and flag."""
        return self._function(
            key, inputs, self.rate, deterministic=deterministic, broadcast_dims=self.broadcast_dims
        )

    def _needs_random_bits(self) -> bool:
        """False at a concrete rate of 0 or 1, where the transform needs no key.

        True while the rate is traced (a JAX array under ``nnx.jit``). Reads
        ``self.rate``; modules without a rate override it.
        """
        return _traced.concrete_value(self.rate) not in (0.0, 1.0)

    def _owner(self) -> str:
        return f"dropoutx.nnx.{type(self).__name__}"

    def _is_deterministic(self, deterministic: bool | None) -> bool:
        """The call's ``deterministic`` if given, else the attribute."""
        if deterministic is not None:
            return bool(deterministic)
        if self.deterministic is not None:
            return bool(self.deterministic)
        name = type(self).__name__
        raise ValueError(
            f"{self._owner()}: no `deterministic` value was given (it is None "
            f"both as an attribute and at call time). Do one of the following:\n"
            f"  1. pass it at call time: module(x, deterministic=True/False);\n"
            f"  2. pass it to the constructor: dxn.{name}(..., deterministic=True/False);\n"
            f"  3. set it on the whole model: model.train() or model.eval();\n"
            f"  4. make a view: nnx.view(model, deterministic=True/False)."
        )

    def _draw_key(self, rngs: RngsLike | None) -> Any:
        """A key from the call's ``rngs`` if given, else from the module's stream.

        The error for a missing key starts with :class:`flax.nnx.Dropout`'s
        own sentence, so code that matches Flax's message still matches.
        """
        source = rngs if rngs is not None else self.rngs
        if source is None:
            raise ValueError(
                f"`deterministic` is False, but no `rngs` argument was provided to "
                f"{type(self).__name__} as either a __call__ argument or class "
                f"attribute. {self._owner()}: deterministic=False needs a PRNG key. "
                f"Pass rngs=nnx.Rngs(dropout=0) (or the model's rngs) when "
                f"constructing the module, or rngs=... (an nnx.Rngs, an "
                f"nnx.RngStream or a key) when calling it; for inference, call "
                f"model.eval(), pass deterministic=True, or use "
                f"nnx.view(model, deterministic=True)."
            )
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array | np.ndarray):
            return source
        raise TypeError(
            f"{self._owner()}: rngs must be an nnx.Rngs, an nnx.RngStream or a "
            f"PRNG key (jax.random.key(0)), got {type(source).__name__}."
        )

    def _resolve(self, deterministic: bool | None, rngs: RngsLike | None) -> tuple[Any, bool]:
        """The key (or ``None``) and the ``deterministic`` flag to pass to the transform.

        Like :class:`flax.nnx.Dropout`, a module draws no key at inference,
        nor at a concrete rate of 0 or 1, where the transform needs no random
        bits (it returns its rate-0 or rate-1 result for ``key=None``), so such
        a module needs no rngs and its stream does not advance. A rate held as
        a traced JAX array always draws a key while training.
        """
        deterministic = self._is_deterministic(deterministic)
        if deterministic or not self._needs_random_bits():
            return None, deterministic
        return self._draw_key(rngs), False

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> jax.Array:
        """Applies the module's transform to ``inputs`` (see the class docstring).

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given; if true, apply the
            inference rule (the identity, except for :class:`VanillaDropout`).
          rngs: overrides the module's stream if given: an ``nnx.Rngs`` (its
            ``rng_collection`` stream is used), an ``nnx.RngStream`` or a key.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        key, deterministic = self._resolve(deterministic, rngs)
        return self._transform(key, inputs, deterministic)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Sets the mode for ``nnx.view``, ``model.train()`` and ``model.eval()``.

        Args:
          deterministic: if True, the module is in inference mode (no noise);
            if False, in training mode; None leaves it unchanged.
        """
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Inverted dropout, a drop-in replacement for :class:`flax.nnx.Dropout`.

    While training, ``y = where(mask, x / (1 - rate), 0)`` with ``mask ~
    Bernoulli(1 - rate)`` shared along ``broadcast_dims``; at inference ``y =
    x``. Calls :func:`dropoutx.inverted_dropout`.

    Args:
      rate: the probability of dropping a unit (not the keep rate), in ``[0,
        1]``; a Python number, or a JAX scalar (then held as state and traced
        under ``nnx.jit``, so changing it does not recompile).
      broadcast_dims: axes that share one mask value (e.g. the spatial axes,
        for channel dropout).
      deterministic: if true, return the input unchanged. ``model.eval()``,
        ``model.train()`` and ``nnx.view`` set it; a call-time value takes
        precedence.
      rng_collection: the stream of an ``nnx.Rngs`` that keys are drawn from.
      rngs: an ``nnx.Rngs`` (its ``rng_collection`` stream is forked) or an
        ``nnx.RngStream`` (forked); may be omitted if keys are passed at call
        time or the module is only used at inference.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.
      TypeError: if ``rngs`` is not an ``nnx.Rngs``, ``nnx.RngStream`` or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> class MLP(nnx.Module):
      ...     def __init__(self, rngs: nnx.Rngs):
      ...         self.linear = nnx.Linear(3, 16, rngs=rngs)
      ...         self.dropout = dxn.Dropout(0.5, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.dropout(self.linear(x))
      >>> model = MLP(nnx.Rngs(0))
      >>> x = jnp.ones((4, 3))
      >>> y = model(x)  # training mode by default
      >>> model.eval()
      >>> h = model(x)  # inference: no dropout
      >>> y.shape, y.dtype
      ((4, 16), dtype('float32'))
      >>> bool(jnp.all((y == 0) | jnp.isclose(y, 2 * h)))  # kept units scaled by 1 / 0.5
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        super().__init__(deterministic, rng_collection, rngs)

    _function = staticmethod(dx.inverted_dropout)


class VanillaDropout(_Stochastic):
    """Vanilla dropout: no rescaling while training, ``x * (1 - rate)`` at inference.

    Calls :func:`dropoutx.vanilla_dropout`: in training mode (the default,
    or after ``model.train()``) ``y = where(mask, x, 0)``; in inference mode
    ``y = x * (1 - rate)``, the weight-scaling rule of Srivastava et al.
    (2014). Constructor and call as :class:`Dropout`.

    Args:
      rate: the probability of dropping a unit, in ``[0, 1]``.
      broadcast_dims: the axes that share one mask value.
      deterministic: if true, scale by ``1 - rate`` instead of masking.
      rng_collection, rngs: as in :class:`Dropout`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.VanillaDropout(0.25, rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.full((2, 8), 4.0, jnp.float32)
      >>> sorted(set(layer(x).ravel().tolist()))  # no rescaling while training
      [0.0, 4.0]
      >>> layer(x, deterministic=True)[0, :2]  # weight scaling at inference
      Array([3., 3.], dtype=float32)
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        super().__init__(deterministic, rng_collection, rngs)

    _function = staticmethod(dx.vanilla_dropout)


class GaussianDropout(_Stochastic):
    """Gaussian dropout: multiply by ``N(1, rate / (1 - rate))`` noise while training.

    Calls :func:`dropoutx.gaussian_dropout`: in training mode ``y = x * (1 +
    sqrt(rate / (1 - rate)) * eps)``, with one ``eps ~ N(0, 1)`` per value
    along the axes not in ``broadcast_dims``; in inference mode ``y = x``.
    Constructor and call as :class:`Dropout`.

    Args:
      rate: in ``[0, 1)``: the noise has the variance of Bernoulli dropout at
        this drop rate.
      broadcast_dims: the axes that share one noise value.
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.GaussianDropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(jnp.ones((1000, 100), jnp.bfloat16))
      >>> y.shape, y.dtype
      ((1000, 100), dtype(bfloat16))
      >>> bool(abs(y.astype(jnp.float32).mean() - 1) < 0.02)  # E[y] = x
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        super().__init__(deterministic, rng_collection, rngs)

    _function = staticmethod(dx.gaussian_dropout)

    def _check(self) -> None:
        _validate.rate(f"nnx.{type(self).__name__}", self.rate, allow_one=False)


class GaussianNoise(_Stochastic):
    """Additive Gaussian noise: ``x + stddev * eps`` while training, ``x`` at inference.

    Calls :func:`dropoutx.gaussian_noise`. The constructor and call of
    :class:`Dropout`, with ``stddev`` for ``rate`` and without
    ``broadcast_dims``.

    Args:
      stddev: the standard deviation of the noise, finite and ``>= 0``; a
        Python number or a JAX scalar.
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> x = jnp.zeros((1000, 100))
      >>> layer = dxn.GaussianNoise(0.1, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(x)
      >>> y.dtype, bool(abs(y.std() - 0.1) < 0.001)
      (dtype('float32'), True)
      >>> bool((nnx.view(layer, deterministic=True)(x) == x).all())  # inference
      True
    """

    def __init__(
        self,
        stddev: ArrayLike,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.stddev = stddev
        super().__init__(deterministic, rng_collection, rngs)

    def _check(self) -> None:
        _validate.stddev(f"nnx.{type(self).__name__}", self.stddev)

    def _needs_random_bits(self) -> bool:
        # Only a concrete stddev of 0 (the identity) needs no key.
        return _traced.concrete_value(self.stddev) != 0.0

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.gaussian_noise(key, inputs, self.stddev, deterministic=deterministic)


class AnnealingStep(nnx.BatchStat[jax.Array]):
    """The training-step counter of :class:`AnnealedDropout` (int32 scalar).

    A subclass of :class:`flax.nnx.BatchStat`: training state that is not
    differentiated, saved and restored with the model (``nnx.state``,
    ``nnx.split``), and selected by the ``nnx.BatchStat`` filter alongside
    batch-norm statistics.
    """


class AnnealedDropout(_Stochastic):
    """Inverted dropout at ``rate = schedule(step)``, counting its own steps.

    While training, ``y = inverted_dropout(key, x, schedule(step))`` and the
    counter ``self.step`` (an :class:`AnnealingStep` variable, int32, starting
    at 0) advances by one; at inference ``y = x`` and the counter is left
    alone. The counter is part of the model's state, so it is traced (not
    recompiled) under ``nnx.jit`` and saved and restored with ``nnx.state`` /
    ``nnx.update`` or ``nnx.split`` / ``nnx.merge``. A ``step`` given at call
    time is used instead of the counter, which it leaves unchanged. Calls
    :func:`dropoutx.annealed_dropout`.

    The counter counts training calls of this module: a module applied twice
    per train step advances twice per train step.

    Args:
      schedule: a callable ``step -> rate``, e.g. any optax schedule such as
        ``optax.linear_schedule(0.5, 0.0, 10_000)`` (Rennie et al. 2014).
      broadcast_dims: axes that share one mask value.
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Raises:
      TypeError: if ``schedule`` is not callable.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.AnnealedDropout(optax.linear_schedule(0.5, 0.0, 100),
      ...                             rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.ones((4, 8))
      >>> sorted(set(layer(x).ravel().tolist()))  # rate 0.5 at step 0
      [0.0, 2.0]
      >>> layer.step[...]
      Array(1, dtype=int32)
      >>> _ = layer(x, deterministic=True)  # inference does not count
      >>> layer.step[...]
      Array(1, dtype=int32)
      >>> bool((layer(x, step=100) == x).all())  # explicit step: rate 0
      True
    """

    def __init__(
        self,
        schedule: Callable[[Any], ArrayLike],
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.schedule = schedule
        self.broadcast_dims = broadcast_dims
        super().__init__(deterministic, rng_collection, rngs)
        self.step = AnnealingStep(jnp.zeros((), jnp.int32))

    def _check(self) -> None:
        _validate.schedule(f"nnx.{type(self).__name__}", self.schedule)

    def __call__(
        self,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
        step: ArrayLike | None = None,
    ) -> jax.Array:
        """Applies inverted dropout at the scheduled rate and advances the counter.

        Args:
          inputs: the activations, of any floating dtype.
          deterministic: overrides the attribute if given.
          rngs: overrides the module's stream if given (Rngs, RngStream or key).
          step: if given, the step to use instead of the counter (which then
            does not advance); a Python int or a (possibly traced) JAX scalar.

        Returns:
          An array of the shape and dtype of ``inputs``.
        """
        if self._is_deterministic(deterministic):
            return dx.annealed_dropout(None, inputs, 0, self.schedule, deterministic=True)
        key = self._draw_key(rngs)
        current = self.step[...] if step is None else step
        outputs = dx.annealed_dropout(
            key, inputs, current, self.schedule, broadcast_dims=self.broadcast_dims
        )
        if step is None:
            self.step[...] = current + 1
        return outputs


class AlphaDropout(_Stochastic):
    """Alpha dropout for self-normalizing networks (SELU), keeping mean 0 and variance 1.

    Calls :func:`dropoutx.alpha_dropout`: in training mode a dropped unit
    takes SELU's negative saturation value ``alpha'``, then ``y = a *
    where(mask, x, alpha') + b``, with ``a`` and ``b`` chosen so that inputs
    of mean 0 and variance 1 keep them (Klambauer et al. 2017); in inference
    mode ``y = x``. Constructor and call as :class:`Dropout`.

    Args:
      rate: the probability of dropping a unit, in ``[0, 1]``; a Python number
        or a JAX scalar.
      broadcast_dims: the axes that share one mask value (the spatial axes,
        for feature alpha dropout).
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Raises:
      ValueError, TypeError: as :class:`Dropout` does.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.AlphaDropout(0.2, rngs=nnx.Rngs(dropout=0))
      >>> x = jax.random.normal(jax.random.key(1), (1000, 1000))
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((1000, 1000), dtype('float32'))
      >>> bool(abs(y.mean()) < 0.01), bool(abs(y.var() - 1) < 0.01)  # mean 0, variance 1
      (True, True)
      >>> layer.eval()
      >>> bool((layer(x) == x).all())
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        super().__init__(deterministic, rng_collection, rngs)

    _function = staticmethod(dx.alpha_dropout)


class DropPath(_Stochastic):
    """Drop path (stochastic depth): drop whole examples of a residual branch.

    Calls :func:`dropoutx.drop_path` (Huang et al. 2016): in training mode
    each example (a slice along axis 0) is kept or dropped whole, ``y[i] =
    where(mask[i], x[i] / (1 - rate), 0)``, unscaled if ``scale_by_keep`` is
    false; in inference mode ``y = x``. Put it on a residual branch, ``x +
    self.drop_path(self.branch(x))``. The constructor and call of
    :class:`Dropout`, with ``scale_by_keep`` for ``broadcast_dims``.

    Args:
      rate: the probability of dropping an example, in ``[0, 1]``; a Python
        number or a JAX scalar.
      scale_by_keep: whether kept examples are scaled by ``1 / (1 - rate)``.
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Raises:
      ValueError, TypeError: as :class:`Dropout` does.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(jnp.ones((8, 3, 4)))
      >>> y.shape, y.dtype
      ((8, 3, 4), dtype('float32'))
      >>> bool((y == y[:, :1, :1]).all())  # each example dropped or kept whole
      True
      >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / 0.5
      [0.0, 2.0]
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        scale_by_keep: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.scale_by_keep = scale_by_keep
        super().__init__(deterministic, rng_collection, rngs)

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.drop_path(
            key, inputs, self.rate, deterministic=deterministic, scale_by_keep=self.scale_by_keep
        )


class DropConnectLinear(_Stochastic):
    """A :class:`flax.nnx.Linear` layer whose kernel is dropped out while training.

    DropConnect (Wan et al. 2013). In training mode each call draws one
    :func:`dropoutx.inverted_dropout` mask for the kernel, which every example
    of the batch sees: ``y = x @ inverted_dropout(key, kernel, rate) + b``. In
    inference mode it computes what :class:`flax.nnx.Linear` does, ``y = x @
    kernel + b``. The parameters, ``kernel`` (``(in_features,
    out_features)``) and ``bias``, are drawn from ``rngs.params()`` as
    :class:`flax.nnx.Linear` draws them, so the same ``rngs`` give the same
    parameters; the dropout stream is forked from ``rngs`` afterwards, as in
    :class:`Dropout`.

    Args:
      in_features: the number of input features.
      out_features: the number of output features.
      rate: the probability of dropping each kernel entry, in ``[0, 1]``; a
        Python number or a JAX scalar.
      use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as in
        :class:`flax.nnx.Linear` (the same defaults).
      deterministic: if true, use the kernel unchanged.
      rng_collection: the stream of an ``nnx.Rngs`` that dropout keys are drawn
        from.
      rngs: an ``nnx.Rngs``, for the parameters and the dropout stream (its
        ``rng_collection`` stream, else its default stream; if it has neither,
        pass keys at call time).

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.DropConnectLinear(3, 4, 0.5, rngs=nnx.Rngs(0))
      >>> layer.kernel.shape, layer.bias.shape
      ((3, 4), (4,))
      >>> x = jnp.ones((2, 3))
      >>> y = layer(x)  # training mode by default
      >>> y.shape, y.dtype
      ((2, 4), dtype('float32'))
      >>> bool((y[0] == y[1]).all())  # one kernel mask for the whole batch
      True
      >>> layer.eval()
      >>> linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))  # same rngs, same parameters
      >>> bool((layer(x) == linear(x)).all())  # inference: a plain Linear
      True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: ArrayLike,
        *,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Any] = _DEFAULT_KERNEL_INIT,
        bias_init: Callable[..., Any] = _DEFAULT_BIAS_INIT,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ) -> None:
        self.in_features = in_features
        self.out_features = out_features
        self.rate = rate
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias: nnx.Param[jax.Array] | None
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)
        # Rngs with only a 'params' stream: keys must then be given at call time.
        has_stream = rng_collection in rngs or "default" in rngs
        super().__init__(deterministic, rng_collection, rngs if has_stream else None)

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        kernel = dx.inverted_dropout(key, self.kernel[...], self.rate, deterministic=deterministic)
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        outputs = jax.lax.dot_general(
            inputs, kernel, (((jnp.ndim(inputs) - 1,), (0,)), ((), ())), precision=self.precision
        )
        if bias is not None:
            outputs += jnp.reshape(bias, (1,) * (outputs.ndim - 1) + (-1,))
        return outputs


class SpatialDropout(_Stochastic):
    """Spatial (channel) dropout: drop whole feature maps of each example.

    Calls :func:`dropoutx.spatial_dropout`: in training mode, inverted dropout
    with one mask value per (example, channel), shared over every spatial axis
    (Tompson et al. 2015), as Keras ``SpatialDropout2D`` and PyTorch
    ``Dropout2d``; in inference mode ``y = x``. Constructor and call as
    :class:`Dropout`, with ``channel_axis`` and ``batch_axis`` for
    ``broadcast_dims``.

    Args:
      rate: the probability of dropping a feature map, in ``[0, 1]``; a Python
        number or a JAX scalar.
      channel_axis: ``-1`` for channels-last maps (Flax's convolutions), ``1``
        for channels-first.
      batch_axis: the axis whose examples get independent masks, or ``None``
        for one unbatched example (e.g. under ``nnx.vmap``).
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.SpatialDropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(jnp.ones((4, 5, 5, 8)))  # NHWC
      >>> y.shape, y.dtype
      ((4, 5, 5, 8), dtype('float32'))
      >>> bool((y == y[:, :1, :1, :]).all())  # each map is dropped or kept whole
      True
      >>> sorted(set(y.ravel().tolist()))  # kept maps scaled by 1 / 0.5
      [0.0, 2.0]
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        super().__init__(deterministic, rng_collection, rngs)

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.spatial_dropout(
            key,
            inputs,
            self.rate,
            deterministic=deterministic,
            channel_axis=self.channel_axis,
            batch_axis=self.batch_axis,
        )


class DropBlock(_Stochastic):
    """DropBlock: drop contiguous blocks of each feature map (Ghiasi et al. 2018).

    Calls :func:`dropoutx.drop_block` (which documents the seed probability):
    in training mode, blocks of ``block_size`` units along every spatial axis
    are dropped, independently per example and channel, about a fraction
    ``rate`` of the units in all, and the kept units are scaled by one factor
    (the number of units over the number kept); in inference mode ``y = x``.
    The input has the batch on axis 0, the channels on ``channel_axis`` and
    one or more spatial axes. Constructor and call as :class:`Dropout`, with
    ``block_size`` and ``channel_axis`` for ``broadcast_dims``.

    Args:
      rate: the target fraction of dropped units, in ``[0, 1]``; a Python
        number or a JAX scalar.
      block_size: the block width along every spatial axis, a Python int from
        1 to the smallest spatial size.
      channel_axis: ``-1`` for channels-last maps, ``1`` for channels-first.
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]`` or
        ``block_size`` is below 1.
      TypeError: if ``block_size`` is not an int, or ``rngs`` is not an
        ``nnx.Rngs``, ``nnx.RngStream`` or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> layer = dxn.DropBlock(0.3, block_size=4, rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.ones((2, 12, 12, 3))  # NHWC
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((2, 12, 12, 3), dtype('float32'))
      >>> bool(jnp.isclose(y.sum(), x.sum()))  # one scale: the total is preserved
      True
      >>> layer.eval()
      >>> bool((layer(x) == x).all())
      True
    """

    def __init__(
        self,
        rate: ArrayLike,
        *,
        block_size: int = 7,
        channel_axis: int = -1,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.block_size = block_size
        self.channel_axis = channel_axis
        super().__init__(deterministic, rng_collection, rngs)

    def _check(self) -> None:
        owner = f"nnx.{type(self).__name__}"
        _validate.rate(owner, self.rate)
        _validate.count(owner, "block_size", self.block_size, minimum=1)

    def _needs_random_bits(self) -> bool:
        # Only a concrete rate of 0 (the identity) needs no key.
        return _traced.concrete_value(self.rate) != 0.0

    def _transform(self, key: Any, inputs: ArrayLike, deterministic: bool) -> jax.Array:
        return dx.drop_block(
            key,
            inputs,
            self.rate,
            block_size=self.block_size,
            deterministic=deterministic,
            channel_axis=self.channel_axis,
        )


# --- recurrent cells ----------------------------------------------------------------


class _WrappedCell(_Stochastic, nnx.RNNCellBase):
    """The base of the recurrent-cell wrappers: a Flax cell, the key it needs, one step.

    A subclass sets its rates before calling this ``__init__``, names them in
    ``_rate_fields``, and supplies :meth:`_step`, which calls a function of
    ``_cells``; it may override :meth:`_start_sequence`, which
    :meth:`initialize_carry` calls.
    """

    _rate_fields: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        cell: nnx.Module,
        deterministic: bool | None,
        rng_collection: str,
        rngs: nnx.Rngs | nnx.RngStream | None,
    ) -> None:
        self.cell = cell
        super().__init__(deterministic, rng_collection, rngs)

    def _check(self) -> None:
        owner = f"nnx.{type(self).__name__}"
        fix = "e.g. nnx.LSTMCell(in_features, hidden_features, rngs=rngs)"
        _validate.recurrent_cell(owner, self.cell, framework="NNX", module_type=nnx.Module, fix=fix)
        for field in self._rate_fields:
            _validate.rate(owner if field == "rate" else f"{owner} ({field})", getattr(self, field))

    def _start_sequence(self) -> None:
        """Called by :meth:`initialize_carry`; nothing by default."""

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        carry_init: Any = None,
    ) -> Any:
        """The wrapped cell's initial carry; starts a sequence.

        Args:
          input_shape: the shape of one step's input.
          rngs: passed to the wrapped cell's ``initialize_carry``.
          carry_init: passed on if given.

        Returns:
          The wrapped cell's initial carry.
        """
        options = {} if carry_init is None else {"carry_init": carry_init}
        carry = self.cell.initialize_carry(input_shape, rngs, **options)  # type: ignore[attr-defined]
        self._start_sequence()
        return carry

    @property
    def num_feature_axes(self) -> int:
        """The wrapped cell's number of feature axes."""
        return int(self.cell.num_feature_axes)  # type: ignore[attr-defined]

    def _step(self, carry: Any, inputs: ArrayLike, key: Any, deterministic: bool) -> Any:
        raise NotImplementedError

    def __call__(  # type: ignore[override]
        self,
        carry: Any,
        inputs: ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> tuple[Any, Any]:
        """One time step of the wrapped cell, with dropout (see the class docstring).

        Args:
          carry: the carry, as the wrapped cell's ``initialize_carry`` makes it.
          inputs: the inputs at this step.
          deterministic: overrides the attribute if given.
          rngs: a key (or ``nnx.Rngs`` / ``nnx.RngStream``, which advance) to
            use instead of the cell's stream.

        Returns:
          ``(new_carry, output)``; the output is the new hidden state ``h``.
        """
        key, deterministic = self._resolve(deterministic, rngs)
        return self._step(carry, inputs, key, deterministic)  # type: ignore[no-any-return]


class RecurrentDropoutCell(_WrappedCell):
    """Variational dropout for a recurrent cell: one mask per sequence (Gal & Ghahramani 2016).

    Wraps a Flax NNX recurrent cell (:class:`flax.nnx.LSTMCell`,
    :class:`~flax.nnx.OptimizedLSTMCell`, :class:`~flax.nnx.GRUCell`,
    :class:`~flax.nnx.SimpleCell`, ...) for :class:`flax.nnx.RNN`. In
    training mode each step computes::

        cell((c, inverted_dropout(k_h, h, recurrent_rate)),
             inverted_dropout(k_x, x_t, input_rate))

    with ``(k_x, k_h) = split(key)`` and the same ``key`` at every step of the
    sequence, so each example (and unit) keeps ONE input mask and ONE
    recurrent mask for the whole sequence, as in "A theoretically grounded
    application of dropout in recurrent neural networks". The carry is
    stored unmasked: the mask applies to ``h`` where the cell reads it, and
    never to an LSTM's cell state ``c``. In inference mode the cell runs
    unchanged. The masks come from :func:`dropoutx.inverted_dropout`. As in
    :class:`dropoutx.linen.RecurrentDropoutCell`, a GRU also reads the masked
    ``h`` in its update ``z * h``, and ``SimpleCell(residual=True)`` in its
    residual.

    **The key of a sequence.** The cell reads its key from its stream without
    advancing it (the key the stream's next call would return), and advances
    the stream in :meth:`initialize_carry`, which starts a sequence. So
    inside ``nnx.RNN``, which carries the cell's state through its scan, the
    key cannot change from one step to the next, and one mask per sequence
    holds with either set-up:

    - ``nnx.RNN(cell)``: ``nnx.RNN`` calls ``initialize_carry`` once per call,
      so each call (each batch) gets new masks. If you pass
      ``initial_carry=`` yourself, the masks carry on until the next
      ``initialize_carry``, as for one long sequence fed in chunks.
    - ``nnx.RNN(cell, broadcast_rngs="dropout")``: ``nnx.RNN`` splits the
      stream once per call and broadcasts it, so each call gets new masks,
      also with ``initial_carry=``. The cell's stream is tagged with
      ``rng_collection`` (``"dropout"``) whatever stream it was forked from,
      since NNX filters streams by tag: a stream of ``nnx.Rngs(0)`` is
      tagged ``"default"`` and would not be matched otherwise.

    Called by hand, step by step, every step reuses the masks until
    ``initialize_carry`` is called; a key passed as ``rngs=`` at call time
    is used as is (pass the same key at every step).

    Args:
      cell: the wrapped NNX recurrent cell (an instance).
      input_rate: the probability of dropping an input unit, in ``[0, 1]``; a
        Python number or a JAX scalar.
      recurrent_rate: the probability of dropping a unit of ``h``, in ``[0,
        1]``.
      deterministic: if true, run the cell without dropout. ``model.train()``,
        ``model.eval()`` and ``nnx.view`` set it.
      rng_collection: the stream of an ``nnx.Rngs`` the cell's stream is
        forked from, and that stream's tag.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``, as in :class:`Dropout`.

    Raises:
      TypeError: if ``cell`` is not an NNX recurrent cell instance.
      ValueError: if a concrete rate is outside ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> rngs = nnx.Rngs(0)
      >>> cell = dxn.RecurrentDropoutCell(
      ...     nnx.LSTMCell(3, 16, rngs=rngs), input_rate=0.2, recurrent_rate=0.25, rngs=rngs)
      >>> rnn = nnx.RNN(cell, broadcast_rngs="dropout")
      >>> x = jnp.ones((4, 10, 3))  # (batch, time, features)
      >>> y = rnn(x)  # training mode by default
      >>> y.shape, y.dtype
      ((4, 10, 16), dtype('float32'))
      >>> rnn.eval()
      >>> bool((rnn(x) == nnx.RNN(cell.cell)(x)).all())  # inference: the plain cell
      True
    """

    _rate_fields = ("input_rate", "recurrent_rate")

    def __init__(
        self,
        cell: nnx.Module,
        *,
        input_rate: ArrayLike = 0.0,
        recurrent_rate: ArrayLike = 0.0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.input_rate = input_rate
        self.recurrent_rate = recurrent_rate
        super().__init__(cell, deterministic, rng_collection, rngs)
        if self.rngs is not None:  # tagged rng_collection, for broadcast_rngs filters
            self.rngs = nnx.data(nnx.RngStream(self.rngs.key[...], tag=rng_collection))

    def _needs_random_bits(self) -> bool:
        rates = map(_traced.concrete_value, (self.input_rate, self.recurrent_rate))
        return any(rate not in (0.0, 1.0) for rate in rates)

    def _draw_key(self, rngs: RngsLike | None) -> Any:
        """The sequence's key: the stream's next key, read without advancing it."""
        if rngs is None and self.rngs is not None:
            return jax.random.fold_in(self.rngs.key[...], self.rngs.count[...])
        return super()._draw_key(rngs)

    def _start_sequence(self) -> None:
        """Advances the stream, so the next sequence reads a new key."""
        if self.rngs is not None and self.deterministic is not True:
            self.rngs()

    def _step(self, carry: Any, inputs: ArrayLike, key: Any, deterministic: bool) -> Any:
        owner, rates = f"nnx.{type(self).__name__}", (self.input_rate, self.recurrent_rate)
        return _cells.variational_step(owner, self.cell, carry, inputs, key, *rates, deterministic)


class ZoneoutCell(_WrappedCell):
    """Zoneout on a recurrent cell's carry (Krueger et al. 2017), a new mask at every step.

    Wraps a Flax NNX recurrent cell for :class:`flax.nnx.RNN`. Each step runs
    the cell, then in training mode each unit of each carry leaf keeps its
    previous value with probability ``rate``,

        new_carry = zoneout(k_leaf, carry, cell_carry, rate)   (leaf by leaf),

    and in inference mode takes the expectation ``rate * carry + (1 - rate) *
    cell_carry`` (:func:`dropoutx.zoneout`). An LSTM's ``c`` and ``h`` both
    zone out, with independent masks and the same rate (the paper zones out
    both, and also reports separate rates for ``c`` and ``h``). The output is
    the zoned hidden state ``h`` (for every Flax cell the output is ``h``).

    **RNG set-up.** The cell draws a new key from its stream at every step,
    which is what ``nnx.RNN(cell)`` gives: it carries the cell's state, and
    with it the stream's count, through its scan. Do not broadcast this
    cell's stream (``broadcast_rngs`` matching its tag, the tag of the stream
    it was forked from): every step would then reuse one mask, and the cell
    cannot detect that from inside the scan. A :class:`RecurrentDropoutCell`
    needs no ``broadcast_rngs``, so the two combine in a plain
    ``nnx.RNN(ZoneoutCell(RecurrentDropoutCell(cell, ...), ...))``.

    Args:
      cell: the wrapped NNX recurrent cell (an instance).
      rate: the probability that a unit keeps its previous value, in ``[0,
        1]``; a Python number or a JAX scalar.
      deterministic, rng_collection, rngs: as in :class:`Dropout`.

    Raises:
      TypeError: if ``cell`` is not an NNX recurrent cell instance.
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropoutx import nnx as dxn
      >>> rngs = nnx.Rngs(0)
      >>> cell = dxn.ZoneoutCell(nnx.LSTMCell(3, 16, rngs=rngs), 0.1, rngs=rngs)
      >>> rnn = nnx.RNN(cell)
      >>> y = rnn(jnp.ones((4, 10, 3)))
      >>> y.shape, y.dtype
      ((4, 10, 16), dtype('float32'))
    """

    _rate_fields = ("rate",)

    def __init__(
        self,
        cell: nnx.Module,
        rate: ArrayLike,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        super().__init__(cell, deterministic, rng_collection, rngs)

    def _needs_random_bits(self) -> bool:
        # Only a concrete rate of 0 (the cell unchanged) needs no key.
        return _traced.concrete_value(self.rate) != 0.0

    def _step(self, carry: Any, inputs: ArrayLike, key: Any, deterministic: bool) -> Any:
        owner = f"nnx.{type(self).__name__}"
        return _cells.zoneout_step(owner, self.cell, carry, inputs, key, self.rate, deterministic)
