"""Sampling: everything between a model folder and a sample's files.

settings.py       SamplingSettings, resolved once against the model folder's defaults; greedy_config
guidance.py       the classifier-free-guidance logits processor
grammar.py        the REMI grammar as a logits processor; syntax errors
guard.py          the musical guard
generation.py     prepare_generation / build_plan → GenerationPlan.run(model) → decode; windows
accompaniment.py  a melody's accompaniment: prepare_accompaniment → AccompanimentJob.run(model)
infilling.py      rewriting bars i..j: prepare_infill → InfillJob.run(model)
render.py         piano-roll images and audio
sample_files.py   the files a sample becomes (.mid .json .wav .png)
"""
