"""The reference the memorization index is checked against (tests/shared_run.py), itself checked by hand and by brute
force."""

from __future__ import annotations

import numpy as np
import pytest
from shared_run import longest_shared_run


def test_longest_shared_run_constructed():
    training = [[1, 2, 3, 4, 5, 6], [9, 9, 7, 8, 9, 10, 11]]
    assert longest_shared_run([0, 7, 8, 9, 10, 0, 3, 4], training) == 4
    # A run across the end of one training piece and the start of the next does not count.
    assert longest_shared_run([5, 6, 9, 9, 7], training) == 3
    assert longest_shared_run([42], training) == 0
    assert longest_shared_run([], training) == 0 and longest_shared_run([1, 2], []) == 0
    tokens = ["Bar_None", "Position_0", "Pitch_60", "Velocity_79", "Duration_1.0.8"]
    assert longest_shared_run(tokens[:4], [tokens[1:]]) == 3


@pytest.mark.parametrize("seed", range(5))
def test_longest_shared_run_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    training = [rng.integers(0, 3, rng.integers(1, 30)).tolist() for _ in range(4)]
    sample = rng.integers(0, 3, 25).tolist()
    brute = max(
        k
        for t in training
        for i in range(len(sample))
        for j in range(len(t))
        for k in range(min(len(sample) - i, len(t) - j) + 1)
        if sample[i : i + k] == t[j : j + k]
    )
    assert longest_shared_run(sample, training) == brute


def test_longest_shared_run_finds_a_copied_passage():
    rng = np.random.default_rng(0)
    training = [rng.integers(40, 80, 2000) for _ in range(50)]
    sample = np.concatenate([rng.integers(40, 80, 300), training[17][500:563], rng.integers(40, 80, 300)])
    assert longest_shared_run(sample, training) == 63
