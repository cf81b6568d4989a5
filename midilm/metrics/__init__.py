"""Music metrics of symbolic pieces: no model, no torch. Sampling (an accompaniment's fit, the piano roll's pitch
names), the evaluation, the composer classifier and the tuning score all read them, so they sit below those stages.

    notes.py          a score as numpy arrays: ticks, notes, pitches, bars; pitch-class names, scales, duration bins
    piece.py          per-piece metrics (`piece_metrics`), windows of bars
    compare.py        sets of pieces compared: standardised gaps, distribution distances, JS divergence
    accompaniment.py  an accompaniment against its melody: onset-and-pitch matches, adherence, harmonic fit
"""
