"""The environment of a subprocess that runs JAX on simulated CPU devices.

Simulated devices are threads of one process, and the test suite runs beside
other test workers on the same cores. A collective (an all-reduce of data
parallel gradients, say) waits for every device's thread, and XLA aborts the
whole process when one is more than 40 s late by default, which a loaded
machine can reach. The flags below give late threads 10 minutes instead; a
real deadlock still fails, through the subprocess's own timeout.
"""

from __future__ import annotations

import os

_PATIENT_COLLECTIVES = (
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120",
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
)


def environment(devices: int | None = None) -> dict[str, str]:
    """``os.environ`` for a CPU-only subprocess, with ``devices`` simulated devices if given.

    The subprocess keeps this process's ``XLA_FLAGS`` (the tests' optimisation
    level, set in ``conftest.py``) and adds its own after them.
    """
    flags = [os.environ.get("XLA_FLAGS", ""), *_PATIENT_COLLECTIVES]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags).strip()}
