"""The one shape of a sampling task: everything checked and built before the weights are read, then `run(model)`.

    prepare_generation(...)     -> GenerationPlan     (generation.py)
    prepare_accompaniment(...)  -> AccompanimentPlan  (accompaniment.py)
    prepare_infill(...)         -> InfillPlan         (infilling.py)

A `prepare_<task>` reads the model folder (config, tokenizer, composers), resolves and checks the sampling settings
and the user's input (a MIDI file, a bar range), and raises InputError before any weight is loaded, so a command
fails in a second rather than after loading a model. `plan.run(model)` then samples with a loaded model.

What `run` returns is the task's own: GenerationPlan.run returns `generate()`'s sequences (read back with
`plan.decode` / `plan.sample_ids`, as the README shows), the others a list of result objects (Accompaniment,
Infill) that already hold their scores.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SamplingPlan(Protocol):
    """What every plan has: the tokenizer it decodes with, one composer per sample, and `run(model)`. The plans
    subclass it, so `num_samples` is written once, here."""

    tokenizer: object
    composers: list[str]  # one per sample ("none": unconditional)

    @property
    def num_samples(self) -> int:
        return len(self.composers)

    def run(self, model): ...
