"""Threefry-2x32 in numpy, the reference the tests hold dropoutx's masks to.

Written from the definition in Salmon et al. (2011), "Parallel random numbers:
as easy as 1, 2, 3", with the round count a parameter; it shares no code with
``dropoutx._random``. ``tests/test_core.py`` checks it against the Random123
known-answer vectors for 13 and 20 rounds and, at 20 rounds, against
``jax.extend.random.threefry_2x32``.
"""

from __future__ import annotations

import numpy as np

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(
    key: tuple[int, int], counter0: np.ndarray, counter1: np.ndarray, rounds: int
) -> tuple[np.ndarray, np.ndarray]:
    """The two output words for every counter pair ``(counter0[i], counter1[i])``."""
    k = np.array([key[0], key[1], key[0] ^ key[1] ^ _PARITY], np.uint32)
    x = [np.asarray(counter0, np.uint32) + k[0], np.asarray(counter1, np.uint32) + k[1]]
    for r in range(rounds):
        rotation = _ROTATIONS[r % 8]
        x[0] = x[0] + x[1]
        x[1] = ((x[1] << np.uint32(rotation)) | (x[1] >> np.uint32(32 - rotation))) ^ x[0]
        if r % 4 == 3:  # a key injection after every fourth round
            s = (r + 1) // 4
            x[0] = x[0] + k[s % 3]
            x[1] = x[1] + k[(s + 1) % 3] + np.uint32(s)
    return x[0], x[1]
