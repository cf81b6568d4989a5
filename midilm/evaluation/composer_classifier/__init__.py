"""Composer adherence: does an independent classifier hear the intended composer in a sample?

The classifier is trained on crops of real pieces from the dataset's training split and validated on
crops of held-out real pieces (the validation and test splits, which prepare_dataset.py splits by
piece, so no piece lends crops to both sides). It never sees the generator's weights or samples.

Why this model. A multinomial logistic regression (scikit-learn, on standardised features) over
hand-made symbolic features:

* it trains in well under a second on CPU for a few hundred crops, so the report can refit it on
  every run and a test can fit it on synthetic music;
* its probabilities are usable as they come (the mean probability of the intended composer is
  reported beside the hard decision), and it is deterministic;
* a few dozen pieces per composer are far too few for a sequence model over tokens, which would
  also share the generator's tokenization; the published references (NotaGen's CLaMP 2 similarity,
  Aria's linear probes on embeddings) need weights that cannot be downloaded here;
* its features are readable, and each was chosen to be blind to key: the generator is trained on
  transposed copies, so a feature that knew the key would read transposition as style.

Features of a crop (`FEATURE_NAMES`), all in quarter notes (tempo-free) and relative pitch:

* the pitch-class histogram (weighted by duration) rotated to the tonic that fits it best
  (Krumhansl–Kessler major/minor profiles), with the mode and how well the best key fits;
* the interval classes between notes that start together, and the notes per onset;
* the melodic intervals of the top line and of the bass (highest and lowest note of each onset);
* durations and inter-onset intervals on log2 bins, onset positions inside the beat and on the
  downbeat, notes and onsets per quarter, how many notes sound at once and how often none does;
* the pitch spread (standard deviation, range, distance between top line and bass).

Velocities, tempos and instruments are left out: they come from the files' writers, not the composer.

A crop is `crop_length` consecutive notes (in onset order) or bars (`crop_unit`); give the length of
the samples to be judged, since histograms of short crops are noisier. A sample is judged on its
first crop (the whole sample when it is shorter).

Reading the figures (`adherence_report`): the classifier's accuracy on held-out real crops is the
ceiling; the share of unconditional samples (`COMPOSER_NONE`) classified as composer c is c's base
rate, the adherence c would get if its token did nothing. Averaged over composers the base rate is
1/K by construction; the per-composer base rates are the reference. A composer with fewer than
`min_train_pieces` training or `min_heldout_pieces` held-out pieces is "not measurable": it is left
out of the classifier and its samples are reported with the reason, never as a failure.

The modules:

    features.py    a crop's features (FEATURE_NAMES), crops, typical_length
    pieces.py      scores from token rows, from MIDI files, the dataset's real pieces
    classifier.py  ComposerClassifier: the fitted model, its probabilities, JSON save/load
    judging.py     judge, adherence, adherence_report, wilson_interval
    fit.py         fit_classifier, train_classifier
    markdown.py    render_markdown
"""
