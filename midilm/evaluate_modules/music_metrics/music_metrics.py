"""midilm's music metrics as a Hugging Face `evaluate` metric: per-piece statistics of generated pieces
and, given real pieces, how far the two sets lie apart. See `midilm.metrics`."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from midilm.evaluate_modules import load_tokenizer_arg, read_pieces
from midilm.grammar import count_syntax_errors
from midilm.metrics import SCALAR_METRICS, compare, piece_metrics, summary_distance

_DESCRIPTION = """
Music metrics of symbolic pieces (midilm.metrics.piece_metrics): pitch-class entropy, scale
consistency, groove consistency, empty-beat rate, polyphony, pitch range, notes per bar, the
pitch-class and duration histograms, and miditok's syntax error rate for token-id input. Given
`real` pieces, the set comparison of midilm.metrics.compare (standardised mean gap, distribution
overlap and KL divergence per metric, Jensen-Shannon divergence of the histograms) and its summary.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: MIDI file paths, or token-id lists (then give `tokenizer`).
    real: optional reference pieces (MIDI paths or token-id lists) to compare the predictions with.
    tokenizer: a midilm tokenizer (or model) folder, or a miditok tokenizer: needed for token ids.
    positions_per_quarter: the onset grid of groove consistency (default 12).
Returns:
    n_pieces; mean: the mean of every scalar metric over the pieces that define it; per_piece: every
    piece's metrics; with `real`: comparison (midilm.metrics.compare) and distance: mean_gap and
    mean_overlap over the scalar metrics but the syntax error rate, pitch_class_js, duration_js.
Examples:
    >>> import evaluate
    >>> from midilm.evaluate_modules import path
    >>> metric = evaluate.load(path("music_metrics"))
    >>> metric.compute(predictions=["sample.mid"], real=["chorale.mid"])
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
    return [piece_metrics(s, syntax_error_rate=e, positions_per_quarter=positions_per_quarter) for s, e in zip(scores, errors)]


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

    def _compute(self, predictions, real=None, tokenizer=None, positions_per_quarter: int = 12):
        tokenizer = load_tokenizer_arg(tokenizer)
        pieces = _metrics(predictions, tokenizer, positions_per_quarter)
        mean = {}
        for key in SCALAR_METRICS + ("n_notes", "n_bars"):
            values = [p[key] for p in pieces if p.get(key) is not None]
            mean[key] = float(np.mean(values)) if values else None
        result = {"n_pieces": len(pieces), "mean": mean, "per_piece": pieces}
        if real is not None:
            comparison = compare(pieces, _metrics(real, tokenizer, positions_per_quarter))
            result["comparison"] = comparison
            result["distance"] = summary_distance(comparison)
        return result
