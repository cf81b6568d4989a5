"""Comparing sets of pieces by their metrics (`midilm.metrics.piece`).

Sets (`compare`): for every scalar metric, the mean and std of each set, ``mean_gap`` = |mean_gen -
mean_real| / std_real, and the overlapping area and KL divergence of the two value distributions
smoothed by a Gaussian kernel (Yang & Lerch 2018); for the histograms, the Jensen–Shannon divergence
between the sets' mean histograms. The reference is always a set of real pieces, never a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from midilm.metrics.piece import HISTOGRAM_METRICS, SCALAR_METRICS

# Generated sets are sampled with the grammar, so their syntax error rate is 0 and would only dilute a
# distance to real pieces; it is reported on its own line instead.
DISTANCE_METRICS = tuple(m for m in SCALAR_METRICS if m != "syntax_error_rate")

# numpy < 2 names it trapz.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


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
