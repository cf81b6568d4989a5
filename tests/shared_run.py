"""The longest run a sample shares with any training sequence, by rolling hashes: the reference the memorization
index (midilm.evaluation.memorization) is checked against.
Moved here from midilm.metrics, where nothing else used it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A Mersenne prime below 2**31: every product of two residues fits in int64. A 31-bit hash may collide,
# so every hash match is confirmed item by item.
_PRIME = 2_147_483_647

_BASE = 1_000_003

_FILTER_BITS = 22  # a 4 MiB table of the sample's hashes screens the training windows before any search


def _as_codes(sequences: list[np.ndarray]) -> list[np.ndarray]:
    """Map arbitrary comparable items (ints, token strings) to ints in [1, number of distinct items]."""
    _, codes = np.unique(np.concatenate(sequences), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64) + 1
    return np.split(codes, np.cumsum([len(s) for s in sequences])[:-1])


def _power_table(base: int, n: int) -> np.ndarray:
    """base**k mod _PRIME for k in [0, n], filled by doubling the known prefix."""
    powers = np.ones(n + 1, dtype=np.int64)
    known = 1
    while known <= n:
        step = min(known, n + 1 - known)
        powers[known : known + step] = powers[:step] * pow(base, known, _PRIME) % _PRIME
        known += step
    return powers


class _WindowHasher:
    """Polynomial hashes of every length-L window of one sequence, for any L, in O(n) numpy work.

    With prefix sums S[i] = sum_{j<i} x_j B^-j (mod P), the window x[i:i+L] hashes to
    (S[i+L] - S[i]) B^(i+L-1) = sum_j x_{i+j} B^(L-1-j)  (mod P).
    """

    def __init__(self, x: np.ndarray):
        self.x = x
        inverse = _power_table(pow(_BASE, _PRIME - 2, _PRIME), len(x))
        # Partial sums of values < 2**31 stay exact in int64 for sequences under 2**32 items.
        self.prefix = np.concatenate([[0], np.cumsum(x * inverse[: len(x)] % _PRIME) % _PRIME])
        self.powers = _power_table(_BASE, len(x))

    def windows(self, length: int) -> np.ndarray:
        count = max(0, len(self.x) - length + 1)
        diff = (self.prefix[length : length + count] - self.prefix[:count]) % _PRIME
        return diff * self.powers[length - 1 : length - 1 + count] % _PRIME


def longest_shared_run(sample: Sequence, training_sequences: Sequence[Sequence]) -> int:
    """Length of the longest run of consecutive items of `sample` found, in order, in one training sequence.

    Items are pitches (see `pitch_sequence`) or tokens, ints or strings. A binary search over the
    run length L compares rolling hashes of all length-L windows of the sample with those of the
    training sequences laid end to end (windows across a boundary do not count), O(total length)
    numpy work per step; a hash match is confirmed item by item, so the answer is exact.
    """
    sequences = [np.asarray(sample).reshape(-1)] + [np.asarray(s).reshape(-1) for s in training_sequences]
    sequences = [sequences[0]] + [s for s in sequences[1:] if len(s)]
    if len(sequences[0]) == 0 or len(sequences) == 1:
        return 0
    codes = _as_codes(sequences)
    sample_hasher = _WindowHasher(codes[0])
    train_hasher = _WindowHasher(np.concatenate(codes[1:]))
    # limit[i]: where the training sequence holding position i ends.
    lengths = np.array([len(c) for c in codes[1:]])
    limit = np.repeat(np.cumsum(lengths), lengths)
    mask = (1 << _FILTER_BITS) - 1

    def shared(length: int) -> bool:
        sample_keys = sample_hasher.windows(length)
        order = np.argsort(sample_keys, kind="stable")
        sorted_keys = sample_keys[order]
        screen = np.zeros(mask + 1, dtype=bool)
        screen[sample_keys & mask] = True
        train_keys = train_hasher.windows(length)
        candidates = np.flatnonzero(screen[train_keys & mask])
        candidates = candidates[candidates + length <= limit[candidates]]
        first = np.searchsorted(sorted_keys, train_keys[candidates], side="left")
        after = np.searchsorted(sorted_keys, train_keys[candidates], side="right")
        for j, begin, end in zip(candidates, first, after):
            window = train_hasher.x[j : j + length]
            if any(np.array_equal(window, codes[0][i : i + length]) for i in order[begin:end]):
                return True
        return False

    lo, hi = 0, min(len(codes[0]), int(lengths.max()))  # a run of length lo is always shared
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if shared(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
