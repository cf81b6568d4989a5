"""Music metrics of symbolic pieces: no model, no torch; used by sampling (accompaniment fit, piano rolls),
the evaluation, the composer classifier and the tuning score.
"""
