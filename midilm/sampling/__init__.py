"""Sampling: everything between a model folder and a sample's files.

plan.py           SamplingPlan: the one shape of the three plans below (prepare_<task> → <Task>Plan.run(model))
settings.py       SamplingSettings, resolved once against the model folder's defaults; greedy_config
guidance.py       the classifier-free-guidance logits processor
grammar.py        the REMI grammar as an automaton; syntax errors
grammar_processor.py  the grammar inside generate(): GrammarLogitsProcessor, StepTracker
guard.py          the musical guard
bars.py           each bar's time signature; the processor that writes exactly N bars (accompaniment, infilling)
windows.py        samples beyond the context, written in windows
generation.py     prepare_generation / build_plan → GenerationPlan.run(model) → decode; windows
accompaniment.py  a melody's accompaniment: prepare_accompaniment → AccompanimentPlan.run(model)
infilling.py      rewriting bars i..j: prepare_infill → InfillPlan.run(model)
render.py         piano-roll images and audio
sample_files.py   the files a sample becomes (.mid .json .wav .png)
"""
