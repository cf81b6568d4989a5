"""midilm's music metrics as a Hugging Face `evaluate` metric: per-piece statistics of generated pieces
and, given real pieces, how far the two sets lie apart. See `midilm.metrics.piece`."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from midilm.evaluate_modules import load_tokenizer_arg, read_pieces
from midilm.metrics.compare import compare, summary_distance
from midilm.metrics.piece import SCALAR_METRICS, bar_windows, median_bars, piece_metrics, pooled_vertical_seconds
from midilm.sampling.grammar import count_syntax_errors

_DESCRIPTION = """
Music metrics of symbolic pieces (midilm.metrics.piece.piece_metrics): pitch-class entropy, scale
consistency, groove consistency, empty-beat rate, polyphony, pitch range, notes per bar, the
pitch-class and duration histograms, vertical seconds (the share of pairs of notes that start together
a minor or major second apart, pooled over the pieces' pairs), and miditok's syntax error rate for token-id input. Given
`real` pieces, the set comparison of midilm.metrics.compare.compare (standardised mean gap, distribution
overlap and KL divergence per metric, Jensen-Shannon divergence of the histograms) and its summary.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: MIDI file paths, or token-id lists (then give `tokenizer`).
    real: optional reference pieces (MIDI paths or token-id lists) to compare the predictions with.
    real_windows: compare with whole real pieces (None, the default), or with the real pieces cut into
        windows of that many bars (midilm.metrics.piece.bar_windows), or "auto": windows as long as the
        predictions' median bar count. Real pieces are far longer than samples, and a few pieces give
        no spread to measure a gap in; windows of the samples' length give both.
    tokenizer: a midilm tokenizer (or model) folder, or a miditok tokenizer: needed for token ids.
    positions_per_quarter: the onset grid of groove consistency (default 12).
Returns:
    n_pieces; mean: the mean of every scalar metric over the pieces that define it; per_piece: every
    piece's metrics; vertical_seconds: {"predictions": share over all their pairs, "real": the same
    for `real` (its windows), or None without it}; with `real`: comparison (midilm.metrics.compare.compare) and
    distance: mean_gap and mean_overlap over the scalar metrics but the syntax error rate, pitch_class_js,
    duration_js; with `real_windows`, real_window_bars: the window length used.
Examples:
    >>> import evaluate
    >>> from midilm.evaluate_modules import path
    >>> metric = evaluate.load(path("music_metrics"))
    >>> metric.compute(predictions=["sample.mid"], real=["chorale.mid"])
    >>> metric.compute(predictions=["sample.mid"], real=["chorale.mid"], real_windows="auto")
"""

_CITATION = """
@article{yang2020evaluation,
  title={On the evaluation of generative models in music},
  author={Yang, Li-Chia and Lerch, Alexander},
  journal={Neural Computing and Applications},
  volume={32}, pages={4773--4784}, year={2020}
}
"""


def _metrics(items, tokenizer, positions_per_quarter: int) -> list[dict]:
    scores, ids = read_pieces(items, tokenizer)
    errors = [count_syntax_errors(tokenizer, row) for row in ids] if ids is not None else [None] * len(scores)
    return [
        piece_metrics(s, syntax_error_rate=e, positions_per_quarter=positions_per_quarter)
        for s, e in zip(scores, errors)
    ]


def _window_metrics(items, tokenizer, n_bars: int, positions_per_quarter: int) -> list[dict]:
    scores, _ = read_pieces(items, tokenizer)
    return [
        piece_metrics(w, positions_per_quarter=positions_per_quarter) for s in scores for w in bar_windows(s, n_bars)
    ]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MusicMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64"))}),
            ],
        )

    def _compute(
        self,
        predictions,
        real=None,
        tokenizer=None,
        positions_per_quarter: int = 12,
        real_windows: int | str | None = None,
    ):
        if not (
            real_windows is None or real_windows == "auto" or (isinstance(real_windows, int) and real_windows >= 1)
        ):
            raise ValueError(f"real_windows must be None, 'auto' or a number of bars (1 or more), got {real_windows!r}")
        tokenizer = load_tokenizer_arg(tokenizer)
        pieces = _metrics(predictions, tokenizer, positions_per_quarter)
        mean = {}
        for key in SCALAR_METRICS + ("n_notes", "n_bars"):
            values = [p[key] for p in pieces if p.get(key) is not None]
            mean[key] = float(np.mean(values)) if values else None
        result = {
            "n_pieces": len(pieces),
            "mean": mean,
            "per_piece": pieces,
            "vertical_seconds": {"predictions": pooled_vertical_seconds(pieces), "real": None},
        }
        if real is not None:
            if real_windows is None:
                reference = _metrics(real, tokenizer, positions_per_quarter)
            else:
                result["real_window_bars"] = median_bars(pieces) if real_windows == "auto" else real_windows
                reference = _window_metrics(real, tokenizer, result["real_window_bars"], positions_per_quarter)
            result["vertical_seconds"]["real"] = pooled_vertical_seconds(reference)
            comparison = compare(pieces, reference)
            result["comparison"] = comparison
            result["distance"] = summary_distance(comparison)
        return result
