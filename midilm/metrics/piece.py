"""Music metrics: per-piece statistics of a score, set-level comparison, and copying checks.

Per piece (`piece_metrics`, a `symusic.Score` in ticks; drum tracks are left out):

- ``pitch_class_entropy``: Shannon entropy, in bits, of the 12-bin pitch-class histogram of note
  onsets, ``H = -sum_c p_c log2 p_c``. 0 for a single pitch class, log2(12) ~ 3.585 at most.
- ``scale_consistency``: largest share of notes whose pitch class lies in one scale, over the 12 major
  and 12 harmonic-minor scales (a natural minor holds the same pitch classes as its relative major,
  so the major scales already cover it). 1.0 when every note fits one scale.
- ``groove_consistency``: ``1 - mean_i d(g_i, g_{i+1})`` where ``g_i`` is the binary onset grid of
  bar i (``positions_per_quarter`` slots a quarter note) and d is the Hamming distance over the
  number of slots of the longer bar (Wu & Yang 2020). Needs two bars.
- ``empty_beat_rate``: share of beats, from 0 to the end of the last note, in which no note sounds.
  Beats are those of `Score.get_beats` (the time signature's beat: a quarter in 4/4, a dotted
  quarter in 6/8).
- ``polyphony``: mean number of notes sounding at each distinct onset time (a note sounds on
  ``[start, end)``; notes starting at that time count). 1.0 for a monophonic line.
- ``pitch_range``: highest minus lowest MIDI pitch, in semitones.
- ``notes_per_bar``: notes over bars, bars being those that start before the last note ends.
- ``vertical_seconds``: share of the pairs of notes that start together (every pair at one onset,
  any tracks) whose interval class is 1 or 2 (a minor or major second, a seventh or ninth apart);
  ``vertical_pairs`` counts those pairs, so a set's share is pooled over pairs
  (`pooled_vertical_seconds`). None for a piece where no two notes start together. Kept out of the
  mean gap (`DISTANCE_METRICS`), which it would change; the report gives it on its own, samples
  against real pieces.
- ``pitch_class_histogram`` (12 shares) and ``duration_histogram`` (shares over
  `DURATION_BIN_EDGES`, in beats = quarter notes) feed the histogram distances of `compare`.
- ``syntax_error_rate``: filled by the caller (midilm.sampling.grammar owns miditok's ``tokens_errors``).

A metric that a piece cannot define (no notes, a single bar) is None.

Sets (`compare`): for every scalar metric, the mean and std of each set, ``mean_gap`` = |mean_gen -
mean_real| / std_real, and the overlapping area and KL divergence of the two value distributions
smoothed by a Gaussian kernel (Yang & Lerch 2018); for the histograms, the Jensen–Shannon divergence
between the sets' mean histograms. The reference is always a set of real pieces, never a constant.

Real pieces are much longer than samples, and pitch range, pitch-class entropy and the like grow with
length; a composer may also have only a couple of held-out pieces, whose std is no unit at all. So the
report compares samples with real passages as long as they are: `bar_windows` cuts each real piece
into windows of the samples' median bar count (`median_bars`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from symusic import Score

SCALAR_METRICS = (
    "pitch_class_entropy",
    "scale_consistency",
    "groove_consistency",
    "empty_beat_rate",
    "polyphony",
    "pitch_range",
    "notes_per_bar",
    "syntax_error_rate",
)
HISTOGRAM_METRICS = ("pitch_class_histogram", "duration_histogram")
# Generated sets are sampled with the grammar, so their syntax error rate is 0 and would only dilute a
# distance to real pieces; it is reported on its own line instead.
DISTANCE_METRICS = tuple(m for m in SCALAR_METRICS if m != "syntax_error_rate")
# Bins centred on 1/8 ... 8 quarter notes, one octave of duration wide: a note falls into the bin of
# the power of two nearest to it on a log scale (triplet eighths with sixteenths, dotted quarters
# with halves).
DURATION_BIN_EDGES = tuple([0.0] + [2.0 ** (k + 0.5) for k in range(-3, 3)] + [math.inf])
# Pitch-class names, for key names and the piano roll's pitch axis.
PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
# 24 rows x 12 pitch classes, 1 where the pitch class is in the scale.
SCALE_MASKS = np.array(
    [[(pc - root) % 12 in steps for pc in range(12)] for steps in (MAJOR, HARMONIC_MINOR) for root in range(12)]
)
# numpy < 2 names it trapz.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def tick_score(score: Score) -> Score:
    """`score` with times in ticks (symusic also holds quarter-note and second timelines)."""
    return score if str(score.ttype).endswith("Tick") else score.to("tick")


def note_arrays(score: Score) -> dict[str, np.ndarray]:
    """Start, end, pitch and velocity (int64) of every pitched note, in ticks, sorted by (start, pitch)."""
    score = tick_score(score)
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return {"start": empty, "end": empty, "pitch": empty, "velocity": empty}
    start = np.concatenate([p["time"] for p in parts]).astype(np.int64)
    end = start + np.concatenate([p["duration"] for p in parts]).astype(np.int64)
    pitch = np.concatenate([p["pitch"] for p in parts]).astype(np.int64)
    velocity = np.concatenate([p["velocity"] for p in parts]).astype(np.int64)
    order = np.lexsort((pitch, start))
    return {"start": start[order], "end": end[order], "pitch": pitch[order], "velocity": velocity[order]}


def pitch_sequence(score: Score) -> np.ndarray:
    """Pitches in onset order (lowest first within a chord): the note sequence `longest_shared_run` compares."""
    return note_arrays(score)["pitch"]


def bars(score: Score, end: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start tick and length in ticks of every bar that starts before `end` (default: the score's end).

    Bars follow the time signatures (4/4 where there is none); a time signature that changes
    mid-bar starts a new bar, as `Score.get_downbeats` does.
    """
    score = tick_score(score)
    end = score.end() if end is None else end
    starts = np.asarray(score.get_downbeats(), dtype=np.int64)
    starts = starts[starts < end]
    if len(starts) == 0:
        starts = np.zeros(1, dtype=np.int64)
    lengths = np.diff(starts, append=starts[-1] + _bar_length_at(score, int(starts[-1])))
    return starts, lengths


def _bar_length_at(score: Score, tick: int) -> int:
    numerator, denominator = 4, 4
    for ts in score.time_signatures:
        if ts.time <= tick:
            numerator, denominator = ts.numerator, ts.denominator
    return max(1, round(numerator * 4 * score.ticks_per_quarter / denominator))


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _groove_consistency(start: np.ndarray, bar_starts: np.ndarray, bar_lengths: np.ndarray, tpq: int, res: int):
    if len(bar_starts) < 2:
        return None
    slots = np.maximum(1, np.round(bar_lengths * res / tpq)).astype(np.int64)
    grid = np.zeros((len(bar_starts), int(slots.max())), dtype=bool)
    bar = np.searchsorted(bar_starts, start, side="right") - 1
    position = np.round((start - bar_starts[bar]) * res / tpq).astype(np.int64)
    grid[bar, np.minimum(position, slots[bar] - 1)] = True
    distance = (grid[1:] != grid[:-1]).sum(axis=1) / np.maximum(slots[1:], slots[:-1])
    return float(1.0 - distance.mean())


def _empty_beat_rate(start: np.ndarray, end: np.ndarray, beats: np.ndarray, last: int):
    beats = beats[beats < last]
    if len(beats) == 0 or beats[0] != 0:
        beats = np.union1d([0], beats)
    first_beat = np.searchsorted(beats, start, side="right") - 1
    last_beat = np.searchsorted(beats, np.maximum(end - 1, start), side="right") - 1
    cover = np.zeros(len(beats) + 1, dtype=np.int64)
    np.add.at(cover, first_beat, 1)
    np.add.at(cover, last_beat + 1, -1)
    return float((np.cumsum(cover)[:-1] == 0).mean())


def _polyphony(start: np.ndarray, end: np.ndarray) -> float:
    onsets = np.unique(start)
    ends = np.sort(np.maximum(end, start + 1))  # a zero-length note still sounds at its onset
    sounding = np.searchsorted(start, onsets, side="right") - np.searchsorted(ends, onsets, side="right")
    return float(sounding.mean())


SECOND_INTERVAL_CLASSES = (1, 2)  # minor and major seconds (and their inversions and compounds)


def vertical_intervals(start: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Interval classes (0-6) of every pair of notes that start together; notes sorted by (start, pitch)."""
    out, d = [], 1
    while d < len(start):
        same = start[d:] == start[:-d]  # in (start, pitch) order, notes d apart at one onset
        if not same.any():
            break  # no onset holds more than d notes
        ic = (pitch[d:][same] - pitch[:-d][same]) % 12
        out.append(np.minimum(ic, 12 - ic))
        d += 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def vertical_seconds(score: Score) -> tuple[int, int]:
    """(pairs of notes that start together a second apart, all pairs of notes that start together)."""
    notes = note_arrays(score)
    ics = vertical_intervals(notes["start"], notes["pitch"])
    return int(np.isin(ics, SECOND_INTERVAL_CLASSES).sum()), len(ics)


def pooled_vertical_seconds(pieces: Sequence[dict]) -> float | None:
    """The share of vertical seconds over all pairs of a set of `piece_metrics` dicts (None: no pairs)."""
    pairs = sum(p.get("vertical_pairs") or 0 for p in pieces)
    seconds = sum((p.get("vertical_seconds") or 0.0) * (p.get("vertical_pairs") or 0) for p in pieces)
    return float(seconds / pairs) if pairs else None


def piece_metrics(
    score: Score, *, syntax_error_rate: float | None = None, positions_per_quarter: int = 12
) -> dict[str, float | int | list[float] | None]:
    """The per-piece metrics of the module docstring, as a JSON-ready dict.

    `positions_per_quarter` is the onset grid of groove consistency: 12 holds sixteenths and
    eighth/sixteenth triplets alike.
    """
    score = tick_score(score)
    tpq = score.ticks_per_quarter
    notes = note_arrays(score)
    start, end, pitch = notes["start"], notes["end"], notes["pitch"]
    result: dict[str, float | int | list[float] | None] = dict.fromkeys(SCALAR_METRICS)
    result["syntax_error_rate"] = None if syntax_error_rate is None else float(syntax_error_rate)
    result["n_notes"] = len(pitch)
    result["pitch_class_histogram"] = [0.0] * 12
    result["duration_histogram"] = [0.0] * (len(DURATION_BIN_EDGES) - 1)
    ics = vertical_intervals(start, pitch)
    result["vertical_pairs"] = len(ics)
    result["vertical_seconds"] = float(np.isin(ics, SECOND_INTERVAL_CLASSES).mean()) if len(ics) else None
    if len(pitch) == 0:
        result["n_bars"] = 0
        return result

    last = int(max(end.max(), start.max() + 1))
    bar_starts, bar_lengths = bars(score, last)
    pc_hist = np.bincount(pitch % 12, minlength=12) / len(pitch)
    duration_beats = (end - start) / tpq
    duration_hist = np.histogram(duration_beats, bins=DURATION_BIN_EDGES)[0] / len(pitch)

    result["n_bars"] = len(bar_starts)
    result["pitch_class_entropy"] = _entropy_bits(pc_hist)
    result["scale_consistency"] = float((SCALE_MASKS @ pc_hist).max())
    result["groove_consistency"] = _groove_consistency(start, bar_starts, bar_lengths, tpq, positions_per_quarter)
    result["empty_beat_rate"] = _empty_beat_rate(start, end, np.asarray(score.get_beats(), dtype=np.int64), last)
    result["polyphony"] = _polyphony(start, end)
    result["pitch_range"] = int(pitch.max() - pitch.min())
    result["notes_per_bar"] = len(pitch) / len(bar_starts)
    result["pitch_class_histogram"] = pc_hist.tolist()
    result["duration_histogram"] = duration_hist.tolist()
    return result


def bar_windows(score: Score, n_bars: int) -> list[Score]:
    """`score` cut into windows of `n_bars` bars laid end to end from its first bar, each moved to start
    at 0 under the time signature in force (a last, shorter remainder is dropped; so are windows
    without notes). A piece of at most `n_bars` bars is one window: itself."""
    if n_bars < 1:
        raise ValueError(f"a window holds at least 1 bar, got {n_bars}")
    score = tick_score(score)
    starts, lengths = bars(score)
    if len(starts) <= n_bars:
        return [score]
    edges = np.append(starts, starts[-1] + lengths[-1])
    windows = [
        score.clip(int(edges[i]), int(edges[i + n_bars]), clip_end=False).shift_time(-int(edges[i]))
        for i in range(0, len(starts) - n_bars + 1, n_bars)
    ]
    return [w for w in windows if w.note_num()] or [score]


def median_bars(pieces: Sequence[dict]) -> int:
    """The median bar count of measured pieces (`piece_metrics` dicts): the window length to cut real pieces to."""
    counts = [p["n_bars"] for p in pieces if p.get("n_bars")]
    return max(1, int(np.median(counts))) if counts else 1


# Set level -------------------------------------------------------------------------------------


def _values(pieces: Sequence[dict], key: str) -> np.ndarray:
    values = [p.get(key) for p in pieces]
    array = np.array([v for v in values if v is not None], dtype=np.float64)
    return array[np.isfinite(array)]


def _kde_bandwidth(values: np.ndarray, floor: float) -> float:
    # Scott's rule, as scipy.stats.gaussian_kde; the floor keeps a set of equal values a narrow bump.
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return max(spread * len(values) ** -0.2, floor)


def _kde(values: np.ndarray, bandwidth: float, grid: np.ndarray) -> np.ndarray:
    z = (grid[:, None] - values[None, :]) / bandwidth
    density = np.exp(-0.5 * z * z).sum(axis=1)
    return density / _trapezoid(density, grid)


def distribution_distance(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Overlapping area and KL(real || generated), in bits, of the two kernel-smoothed distributions.

    Overlap is 1 and KL 0 for identical sets; overlap falls to 0 for sets that lie far apart,
    where KL is bounded by the 1e-12 density floor.
    """
    pooled = np.concatenate([generated, real])
    scale = pooled.std() or abs(pooled.mean()) or 1.0
    h_gen, h_real = (_kde_bandwidth(v, 1e-3 * scale) for v in (generated, real))
    lo, hi = pooled.min() - 5 * max(h_gen, h_real), pooled.max() + 5 * max(h_gen, h_real)
    points = int(np.clip((hi - lo) / (min(h_gen, h_real) / 4), 512, 20_000))
    grid = np.linspace(lo, hi, points)
    p_gen, p_real = _kde(generated, h_gen, grid), _kde(real, h_real, grid)
    overlap = float(min(1.0, _trapezoid(np.minimum(p_gen, p_real), grid)))
    floor = 1e-12 * max(p_gen.max(), p_real.max())
    kl = _trapezoid(p_real * np.log2(np.maximum(p_real, floor) / np.maximum(p_gen, floor)), grid)
    return {"overlap": overlap, "kl_divergence": float(max(kl, 0.0))}


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon divergence in bits (0 for equal histograms, 1 for disjoint ones)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float((a[mask] * np.log2(a[mask] / m[mask])).sum())

    return max(0.0, (kl(p) + kl(q)) / 2)


def _spread(values: np.ndarray) -> float:
    """The standard deviation, 0 where it is only float rounding (equal values can give 1e-17: a gap of 1e14)."""
    std = float(values.std())
    return std if std > 1e-9 * max(1.0, float(np.abs(values).max())) else 0.0


def compare(generated: Sequence[dict], real: Sequence[dict]) -> dict[str, dict[str, float | int | list[float] | None]]:
    """Compare two sets of `piece_metrics` dicts; `real` is the reference (held-out real pieces).

    Per scalar metric: ``generated_mean``, ``generated_std``, ``generated_n``, the same for ``real``,
    ``mean_gap`` (|difference of means| over the real std; over the pooled std, then 1, when that is
    0), ``overlap`` and ``kl_divergence`` (see `distribution_distance`). Metrics that either set
    never defines (None everywhere, e.g. no syntax error rate given) are left out.
    Per histogram: the mean histogram of each set (pieces without notes left out) and
    ``js_divergence`` between them.
    """
    result: dict[str, dict] = {}
    for key in SCALAR_METRICS:
        gen, ref = _values(generated, key), _values(real, key)
        if len(gen) == 0 or len(ref) == 0:
            continue
        gap = abs(gen.mean() - ref.mean())
        unit = _spread(ref) or _spread(np.concatenate([gen, ref])) or 1.0
        result[key] = {
            "generated_mean": float(gen.mean()),
            "generated_std": float(gen.std()),
            "generated_n": len(gen),
            "real_mean": float(ref.mean()),
            "real_std": float(ref.std()),
            "real_n": len(ref),
            "mean_gap": float(gap / unit),
            **distribution_distance(gen, ref),
        }
    for key in HISTOGRAM_METRICS:
        means = []
        for pieces in (generated, real):
            hists = np.array([p[key] for p in pieces if p.get(key) is not None and sum(p[key]) > 0], dtype=np.float64)
            means.append(hists.mean(axis=0) if len(hists) else None)
        if means[0] is None or means[1] is None:
            continue
        result[key] = {
            "generated": means[0].tolist(),
            "real": means[1].tolist(),
            "js_divergence": js_divergence(means[0], means[1]),
        }
    return result


def summary_scalars(comparison: dict, prefix: str = "music") -> dict[str, float]:
    """Flatten `compare`'s distances into ``{"music/<metric>/<distance>": value}`` for logging."""
    scalars = {}
    for metric, entry in comparison.items():
        for name in ("generated_mean", "real_mean", "mean_gap", "overlap", "kl_divergence", "js_divergence"):
            if name in entry:
                scalars[f"{prefix}/{metric}/{name}"] = float(entry[name])
    return scalars


# Copying ---------------------------------------------------------------------------------------

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


# Accompaniment ---------------------------------------------------------------------------------
#
# A generated full piece is judged against the melody it was given (both Scores; their resolutions
# may differ, so times are compared in quarter notes):
#
# - ``melody_adherence``: share of melody notes that the full piece plays at the same pitch and
#   onset (within `onset_tolerance` quarter notes: half the tokenizer's finest step by default, as
#   a played melody is quantized to that grid before the model sees it).
# - ``harmonic_fit``: share of accompaniment note-time (the full piece's notes other than those that
#   double a melody note) whose pitch class is sounding in the melody during that beat, or belongs
#   to the melody's key (the major or harmonic-minor scale that holds most of its note-time).
#   ``beat_fit`` and ``key_fit`` are the two halves alone.
#
# The same figures for a real piece (its own accompaniment under its extracted melody:
# `accompaniment_metrics(extract_melody(score).score, score)`) give the reference; there
# melody adherence is 1 by construction.

DEFAULT_ONSET_TOLERANCE = 1 / 16  # quarter notes: half a 32nd, the finest REMI grid (TOKENIZER_DEFAULTS' beat_res)


def _notes_in_quarters(score: Score) -> dict[str, np.ndarray]:
    score = tick_score(score)
    notes = note_arrays(score)
    tpq = score.ticks_per_quarter
    return {"start": notes["start"] / tpq, "end": notes["end"] / tpq, "pitch": notes["pitch"]}


def onset_pitch_matches(
    ref_start: np.ndarray, ref_pitch: np.ndarray, start: np.ndarray, pitch: np.ndarray, tolerance: float
) -> np.ndarray:
    """For each (start, pitch): whether a reference note has that pitch and an onset within `tolerance`."""
    if len(ref_start) == 0 or len(start) == 0:
        return np.zeros(len(start), dtype=bool)
    span = 4.0 * (max(ref_start.max(), start.max()) + tolerance + 1.0)  # keys of two pitches never meet
    ref_key = np.sort(ref_pitch * span + ref_start)
    key = pitch * span + start
    first = np.searchsorted(ref_key, key - tolerance - 1e-9, side="left")
    found = first < len(ref_key)
    found[found] &= ref_key[first[found]] <= key[found] + tolerance + 1e-9
    return found


def melody_notes_matched(
    melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """(for each melody note: found in `full`; for each note of `full`: it doubles a melody note),
    notes in `note_arrays` order."""
    mel, gen = _notes_in_quarters(melody), _notes_in_quarters(full)
    return (
        onset_pitch_matches(gen["start"], gen["pitch"], mel["start"], mel["pitch"], onset_tolerance),
        onset_pitch_matches(mel["start"], mel["pitch"], gen["start"], gen["pitch"], onset_tolerance),
    )


def melody_adherence(melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE) -> float | None:
    """Share of the melody's notes found in `full` at the same pitch and onset; None without melody notes."""
    found, _ = melody_notes_matched(melody, full, onset_tolerance)
    return float(found.mean()) if len(found) else None


def melody_key(melody: Score) -> tuple[str, np.ndarray]:
    """The melody's key ("G major", "E harmonic minor") and its 12 pitch classes as booleans, from the
    note-time of each pitch class (the best of `SCALE_MASKS`)."""
    mel = _notes_in_quarters(melody)
    weights = np.bincount(mel["pitch"] % 12, weights=mel["end"] - mel["start"], minlength=12)
    best = int(np.argmax(SCALE_MASKS @ weights))
    mode = "major" if best < 12 else "harmonic minor"
    return f"{PITCH_CLASS_NAMES[best % 12]} {mode}", SCALE_MASKS[best].astype(bool)


def _beat_grid(melody: Score, end: float) -> np.ndarray:
    """Beat times of the melody, in quarter notes, continued at the last spacing to `end`."""
    score = tick_score(melody)
    beats = np.asarray(score.get_beats(), dtype=np.float64) / score.ticks_per_quarter
    if len(beats) == 0 or beats[0] > 0:
        beats = np.concatenate([[0.0], beats])
    step = beats[-1] - beats[-2] if len(beats) > 1 else 1.0
    if beats[-1] < end:
        beats = np.concatenate([beats, beats[-1] + step * np.arange(1, int(np.ceil((end - beats[-1]) / step)) + 1)])
    return np.concatenate([beats, [beats[-1] + step]])


def accompaniment_metrics(
    melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE
) -> dict[str, float | int | str | None]:
    """Melody adherence, harmonic fit (with beat fit and key fit), the melody's key and note counts;
    see the comment above. A figure that cannot be defined (no melody notes, no accompaniment) is None."""
    mel, gen = _notes_in_quarters(melody), _notes_in_quarters(full)
    found, doubles = melody_notes_matched(melody, full, onset_tolerance)
    result: dict[str, float | int | str | None] = {
        "melody_adherence": float(found.mean()) if len(found) else None,
        "harmonic_fit": None,
        "beat_fit": None,
        "key_fit": None,
        "key": None,
        "melody_notes": len(found),
        "accompaniment_notes": int((~doubles).sum()),
    }
    if len(found) == 0:
        return result
    key_name, key_pcs = melody_key(melody)
    result["key"] = key_name
    start, end, pitch = gen["start"][~doubles], gen["end"][~doubles], gen["pitch"][~doubles]
    if len(start) == 0:
        return result
    beats = _beat_grid(melody, float(max(end.max(), mel["end"].max())))
    # [beats, 12]: the pitch classes the melody sounds during each beat
    sounding = np.zeros((len(beats) - 1, 12), dtype=bool)
    for s, e, p in zip(mel["start"], np.maximum(mel["end"], mel["start"] + 1e-6), mel["pitch"]):
        first, last = np.searchsorted(beats, s, side="right") - 1, np.searchsorted(beats, e, side="left") - 1
        sounding[first : last + 1, p % 12] = True
    total = in_beat = in_key = either = 0.0
    for s, e, p in zip(start, np.maximum(end, start + 1e-6), pitch):
        first, last = np.searchsorted(beats, s, side="right") - 1, np.searchsorted(beats, e, side="left") - 1
        for j in range(first, last + 1):
            overlap = min(e, beats[j + 1]) - max(s, beats[j])
            if overlap <= 0:
                continue
            beat_ok, key_ok = sounding[j, p % 12], key_pcs[p % 12]
            total += overlap
            in_beat += overlap * beat_ok
            in_key += overlap * key_ok
            either += overlap * (beat_ok or key_ok)
    if total > 0:
        result.update(
            harmonic_fit=float(either / total), beat_fit=float(in_beat / total), key_fit=float(in_key / total)
        )
    return result


def harmonic_fit(melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE) -> float | None:
    """Share of accompaniment note-time in the pitch classes of the melody's beat or key; None when
    there is no melody or no accompaniment. `accompaniment_metrics` gives its two halves too."""
    return accompaniment_metrics(melody, full, onset_tolerance)["harmonic_fit"]


def summary_distance(comparison: dict) -> dict[str, float | None]:
    """One distance per sample set: the mean over metrics of the standardised mean gap, the mean
    overlap of the value distributions, and the Jensen–Shannon divergences of the histograms."""
    gaps = [comparison[m]["mean_gap"] for m in DISTANCE_METRICS if m in comparison]
    overlaps = [comparison[m]["overlap"] for m in DISTANCE_METRICS if m in comparison]
    return {
        "mean_gap": float(np.mean(gaps)) if gaps else None,
        "mean_overlap": float(np.mean(overlaps)) if overlaps else None,
        "pitch_class_js": comparison.get("pitch_class_histogram", {}).get("js_divergence"),
        "duration_js": comparison.get("duration_histogram", {}).get("js_divergence"),
    }
