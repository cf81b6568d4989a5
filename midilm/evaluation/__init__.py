"""Evaluate a trained model against real held-out pieces: likelihood, music metrics, CFG sweep, copying.

One module per part; `run.evaluate` loads the model and the data once, then calls the steps in order, each taking
what it reads and returning one section of the report and what a later step needs:

    arguments.py      EvaluateArguments (the flags, checked once), check_output_dir
    loading.py        Context (what is loaded once and every step reads), load_context; RealPassages (the real
                      pieces cut into passages, measured once per length)
    steps.py          the steps that draw or score: likelihood, the guidance sweep (Sweep), the main sample sets
                      (MainSets), accompaniment, long pieces, infilling
    run.py            evaluate(): the steps wired in order; the sections that only summarize
    data.py           held-out rows and pieces; one streamed pass over the training split
    likelihood.py     NLL per token and per note; the unigram baseline
    samples.py        sample sets (drawn as generate.py draws them, or read from its files), metrics, distances,
                      memorization
    adherence.py      the guidance sweep: composer adherence (midilm.evaluation.composer_classifier),
                      degenerate samples, the default it chooses
    accompaniment.py  accompaniments of real held-out melodies
    long_pieces.py    --long_tokens: drift over pieces longer than the context, against real pieces
    infilling.py      models trained with the infill task: held-out spans scored and rewritten
    report.py         report.json, report.md (assembled from the report_* sections), the evaluated samples as MIDI,
                      the headline
    report_samples.py     report.md on the likelihood and the sample sets (headline table, per composer, histogram
                          distances, memorization, method)
    report_adherence.py   report.md's composer-adherence section and the guidance default
    report_tasks.py       report.md on accompaniment, long pieces and infilling
    report_format.py      cells and tables

and the judges the steps (and tuning/) use:

    composer_classifier/  the report's composer classifier (features, fitting, judging, its Markdown)
    ngram_classifier.py   the independent judge (naive Bayes on note n-grams), sharing nothing with it (tuning)
    memorization.py       the longest passage of a sample that a training piece holds, at any transposition

    python evaluate_samples.py --model_dir model_output --dataset_dir data --output_dir eval_report

What it measures (every number is written to report.json, the headline ones to report.md):

- Likelihood on the held-out split: NLL per token, perplexity and NLL per note (the dataset's
  `n_notes` column: per-token loss is not comparable across BPE vocabularies), beside a unigram model
  fitted on the training split (add-one smoothing) and the same architecture with random weights.
- Music metrics (`midilm.metrics.piece.piece_metrics` + miditok's syntax error rate) of the trained
  model's samples, of random-weight samples, and of the real held-out pieces of each composer;
  `compare` of each sample set with the real pieces, per composer and pooled.
- Accompaniment (models trained with `--tasks accompaniment`): melody adherence and harmonic fit of
  the trained and the random-weight model's accompaniments of real held-out melodies, beside the real
  pieces' own.
- A guidance-scale sweep (`--adherence_scales`, 16 samples per composer at each by default, guard on
  and off, plus unconditional samples): composer adherence judged by an independent classifier
  (the `composer_adherence` evaluate module: its ceiling on real held-out crops, the unconditional base
  rate, 95% Wilson intervals, confusion matrices), degenerate samples (more notes at one onset than any
  training piece of the composer holds) with the musical guard on and off, syntax errors, the music-metric
  gap (the `music_metrics` evaluate module), notes per sample and memorization at each scale; the guidance
  default it chooses (highest adherence with no more degenerate samples than the real pieces), written to
  the model's config.json with `--write_default_guidance`. Histogram distances per scale stay as a
  secondary table: pitch-class histograms mostly measure key and mode.
- Long pieces (`--long_tokens N`, off by default): a few samples per composer of N tokens, written in
  windows beyond the context; the music-metric gap of each piece's last window against its first (drift),
  beside the gap between two sets of the composer's real held-out pieces, the target it should stay within.
- Infilling (models trained with `--tasks ...,infill`; `--infill_pieces`, `--infill_spans_per_piece`,
  `--infill_max_bars`, 0 = off): seeded spans of the shortest held-out pieces; the span's NLL per note given the
  bars before and after it against the same bars before only (the reduction is what the suffix is worth); one
  rewrite per span through generate.py's infill path: its music-metric gap to the real spans (beside real spans vs
  real spans), its seams (top-voice leap, register shift and density jump across the bar lines into and out of the
  span, beside the real piece's at the same bar lines), notes outside the span identical (must be 100%) and syntax
  errors (must be 0).
- Memorization: for every piece, the longest run of successive pitch intervals it shares with one
  training piece at any transposition (`midilm.evaluation.memorization`), per sample set and guidance scale; the
  real held-out pieces also as passages as long as the median sample, the level samples are read against.

Scale: the training split is never loaded into Python lists nor decoded. One pass over its Arrow
batches (`scan_training`) checks its rows, counts its tokens for the unigram model and its pieces,
and builds the memorization index, the one thing here whose size follows the training split.

Samples are drawn with the same API as generate.py (`build_plan` + `plan.run`: CFG and the
REMI grammar). The random-weight baseline is sampled with the grammar on as well, so its syntax is
valid too: it shows what the grammar alone gives, and the trained model must beat it on the music.
"""
