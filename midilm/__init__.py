"""midilm: composer-conditioned symbolic-music language models on the Hugging Face stack.

    from midilm import SamplingSettings, load_model, prepare_generation

    plan = prepare_generation("model_output", composer="bach", num_samples=2, settings=SamplingSettings(seed=0))
    for i, score in enumerate(plan.decode(plan.run(load_model("model_output")))):
        score.dump_midi(f"bach_{i}.mid")

The public API, by what it is for (each name lives in the module beside it):

    generation      prepare_generation, GenerationPlan, load_model, list_composers (midilm.sampling.generation);
                    prepare_accompaniment (midilm.sampling.accompaniment);
                    infill, prepare_infill, infill_span (midilm.sampling.infilling: rewrite bars i..j of a piece)
    sampling        SamplingSettings (midilm.sampling.settings)
    loading         load_tokenizer, ComposerMap (midilm.core.tokenizer); load_midilm_dir (midilm.core.modeling)
    evaluation      evaluate_module_path, EVALUATE_MODULES (midilm.evaluate_modules:
                    `evaluate.load(evaluate_module_path("music_metrics"))`);
                    EvaluateArguments, evaluate_model (midilm.evaluation.arguments, .run: the whole report)
    errors          InputError (midilm.core.errors)

The commands (`midilm prepare | train | generate | evaluate | app | tune`) live in midilm.commands.

Each name is imported on first use (PEP 562), so `import midilm` stays light: the data step's spawned
workers import midilm.data.scan and must not pay for torch or transformers until they need them.
"""

from __future__ import annotations

import importlib

# name -> (module, attribute in it)
_API = {
    "prepare_generation": ("midilm.sampling.generation", "prepare_generation"),
    "GenerationPlan": ("midilm.sampling.generation", "GenerationPlan"),
    "load_model": ("midilm.sampling.generation", "load_model"),
    "list_composers": ("midilm.sampling.generation", "list_composers"),
    "prepare_accompaniment": ("midilm.sampling.accompaniment", "prepare_accompaniment"),
    "infill": ("midilm.sampling.infilling", "infill"),
    "prepare_infill": ("midilm.sampling.infilling", "prepare_infill"),
    "infill_span": ("midilm.sampling.infilling", "infill_span"),
    "SamplingSettings": ("midilm.sampling.settings", "SamplingSettings"),
    "load_tokenizer": ("midilm.core.tokenizer", "load_tokenizer"),
    "ComposerMap": ("midilm.core.tokenizer", "ComposerMap"),
    "load_midilm_dir": ("midilm.core.modeling", "load_midilm_dir"),
    "evaluate_module_path": ("midilm.evaluate_modules", "path"),
    "EVALUATE_MODULES": ("midilm.evaluate_modules", "MODULES"),
    "EvaluateArguments": ("midilm.evaluation.arguments", "EvaluateArguments"),
    "evaluate_model": ("midilm.evaluation.run", "evaluate"),
    "InputError": ("midilm.core.errors", "InputError"),
}

__all__ = [*_API]  # noqa: PLE0604 (built from _API, so the list and the table cannot drift apart)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'midilm' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
