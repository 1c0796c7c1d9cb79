"""Dropout on sharded arrays, with no communication between devices.

The checks on 8 devices run in a subprocess (``tests/sharding_checks.py``; see
its docstring for what each proves), since this session's JAX backend already
started with one device. Here: that every check passes, naming each one that
does not; the sharded-training example; and ``shard_key`` on one device.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import simulated_devices
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import dropoutx as dx
from dropoutx._sharding import shard_key

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
MARKER = "SHARDING_CHECKS_JSON "


def _load_checks() -> ModuleType:
    """``tests/sharding_checks.py``, imported without running any check."""
    name = "dropoutx_tests_sharding_checks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "sharding_checks.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=simulated_devices.environment(),  # the scripts set their device count
        check=False,
    )


def test_sharded_transforms_need_no_communication() -> None:
    """Every check of tests/sharding_checks.py passes on a 4 x 2 mesh of CPU devices.

    Each transform keeps the input's sharding, compiles with no collective and
    no array bigger than one shard, and equals the unsharded result, under jit
    with NamedSharding and under Auto and Explicit meshes; shard_key gives
    independent masks inside shard_map.
    """
    names = list(_load_checks().all_checks())
    process = _run(TESTS / "sharding_checks.py")
    lines = [line for line in process.stdout.splitlines() if line.startswith(MARKER)]
    assert process.returncode == 0 and lines, (
        f"sharding_checks.py exited with {process.returncode}:\n{process.stderr[-5000:]}"
    )
    results = json.loads(lines[-1][len(MARKER) :])
    assert sorted(results) == sorted(names)
    failures = {name: result for name, result in results.items() if result != "ok"}
    report = "\n\n".join(f"{name}: {result}" for name, result in failures.items())
    assert not failures, f"{len(failures)} of {len(results)} checks failed:\n{report}"


def test_sharded_training_example() -> None:
    """examples/sharded_training.py trains to a lower loss and asserts no collectives."""
    process = _run(ROOT / "examples" / "sharded_training.py")
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-5000:]
    assert "no collectives" in process.stdout
    assert "final eval loss" in process.stdout


def _one_device_mesh(*axes: str) -> jax.sharding.Mesh:
    return jax.make_mesh((1,) * len(axes), axes, devices=jax.devices()[:1])


@pytest.mark.parametrize("axis_name", ["data", ("data", "model"), ["data", "model"]])
def test_shard_key_folds_in_the_shard_index(axis_name: str | tuple[str, ...]) -> None:
    """On a one-device mesh the only shard has index 0: shard_key = fold_in(key, 0)."""
    mesh = _one_device_mesh("data", "model")
    key = jax.random.key(3)
    spec = P(("data", "model"))
    x = jax.device_put(jnp.zeros((4,), jnp.uint32), NamedSharding(mesh, spec))

    def local(key: jax.Array, x: jax.Array) -> jax.Array:
        return x + jax.random.key_data(shard_key(key, axis_name))[1]

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec), out_specs=spec)
    expected = jax.random.key_data(jax.random.fold_in(key, 0))[1]
    np.testing.assert_array_equal(np.asarray(jax.jit(fn)(key, x)), np.full(4, expected))


def test_shard_key_under_named_vmap_gives_one_key_per_index() -> None:
    """axis_index also names a vmap axis: key i is fold_in(key, i)."""
    key = jax.random.key(3)
    keys = jax.vmap(lambda _: shard_key(key, "batch"), axis_name="batch")(jnp.arange(4))
    expected = jnp.stack([jax.random.key_data(jax.random.fold_in(key, i)) for i in range(4)])
    np.testing.assert_array_equal(jax.random.key_data(keys), expected)


def test_shard_key_keeps_the_kind_of_key() -> None:
    """A raw uint32[2] key gives a raw key, a typed key a typed key."""
    raw = jax.vmap(lambda _: shard_key(jax.random.PRNGKey(3), "i"), axis_name="i")(jnp.arange(2))
    assert raw.dtype == jnp.uint32 and raw.shape == (2, 2)
    typed = jax.vmap(lambda _: shard_key(jax.random.key(3), "i"), axis_name="i")(jnp.arange(2))
    assert jax.dtypes.issubdtype(typed.dtype, jax.dtypes.prng_key) and typed.shape == (2,)


def test_shard_key_masks_are_independent_across_shards() -> None:
    """Different shard indices give different masks (fold_in keys are distinct)."""
    masks = jax.vmap(
        lambda _: dx.keep_mask(shard_key(jax.random.key(0), "i"), (64,), 0.5), axis_name="i"
    )(jnp.arange(8))
    assert len({np.asarray(mask).tobytes() for mask in masks}) == 8


@pytest.mark.parametrize(
    ("axis_name", "error", "match"),
    [
        (3, TypeError, "axis_name must be a mesh axis name"),
        (("data", 1), TypeError, "axis_name must be a mesh axis name"),
        ((), ValueError, "axis_name must name at least one mesh axis"),
    ],
)
def test_shard_key_rejects_bad_axis_names(axis_name: object, error: type, match: str) -> None:
    with pytest.raises(error, match=rf"dropoutx\.shard_key: {match}"):
        shard_key(jax.random.key(0), axis_name)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [jnp.zeros(3), jax.random.split(jax.random.key(0), 2), None])
def test_shard_key_rejects_bad_keys(key: object) -> None:
    with pytest.raises(TypeError, match=r"dropoutx\.shard_key"):
        shard_key(key, "data")


def test_shard_key_outside_shard_map_raises() -> None:
    """Without a bound axis there is no shard index; JAX says which name is unbound."""
    with pytest.raises(NameError, match="data"):
        shard_key(jax.random.key(0), "data")
