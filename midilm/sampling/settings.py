"""How to sample: one `SamplingSettings` for generate.py, the Python API, accompaniment, the app,
evaluation and the benches, resolved once against a model folder's defaults and checked once.

    settings = SamplingSettings(guidance_scale=2.0, seed=1)          # None: the model folder's default
    resolved = settings.resolve(sampling_defaults("model_output"), context=1024)

The defaults (`midilm.core.modeling.sampling_defaults`): the guidance scale from config.json's
`midilm_guidance_scale`, the rest from generation_config.json. What a setting left unset and
without a default means is its neutral value (guidance 1, temperature 1, top-k 0, top-p 1, no penalty).

Our CFG processor (midilm.sampling.guidance) samples the token itself, so the GenerationConfig handed to
generate() is greedy on purpose (`greedy_config`), and transformers' own sampling, repetition
penalty and CFG stay out of the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from transformers import CompileConfig, GenerationConfig

from midilm.core.errors import InputError
from midilm.core.rows import body_room
from midilm.sampling.guidance import CFGSamplingProcessor

# Each setting's neutral value: what it is when neither the caller nor the model folder sets it.
NEUTRAL = {"guidance_scale": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}
TYPES = {"guidance_scale": float, "temperature": float, "top_k": int, "top_p": float, "repetition_penalty": float}


@dataclass(frozen=True)
class SamplingSettings:
    """Every sampling knob. None: the model folder's default (see `resolve`)."""

    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": (
                "Classifier-free guidance scale s; 1 = off, 0 = unconditional (default: the model's "
                "midilm_guidance_scale)."
            )
        },
    )
    temperature: float | None = field(default=None, metadata={"help": "Softmax temperature."})
    top_k: int | None = field(default=None, metadata={"help": "Keep the k most likely tokens (0 = off)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling mass (1 = off)."})
    repetition_penalty: float | None = field(
        default=None, metadata={"help": "Penalty on tokens already in the sequence (1 = off)."}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": (
                "Tokens to generate (default: the model's generation_config.json, at most the context). More "
                "than the context holds are written in windows: each rereads the header and the latest whole "
                "bars (up to half the context) and writes on."
            )
        },
    )
    min_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Generate at least this many tokens (no EOS before); capped to --max_new_tokens."},
    )
    seed: int = field(default=0, metadata={"help": "Same seed and settings give byte-identical MIDI files."})
    grammar: bool = field(
        default=True, metadata={"help": "The REMI grammar processor (--no_grammar turns it off, for measuring)."}
    )
    guard: bool = field(
        default=True,
        metadata={
            "help": (
                "The musical guard: it caps the notes starting at one onset and in one bar at the bounds learnt "
                "from the training data (config.json's midilm_guard), on for a model that carries them; "
                "--no_guard turns it off."
            )
        },
    )
    static_cache: bool = field(
        default=False,
        metadata={
            "help": (
                "Preallocated KV cache (transformers' cache_implementation='static'): same seed, same MIDI bytes "
                "as without it (tested). Meant for --compile, whose fixed shapes it provides (speeds: "
                'bench/RESULTS.md, "Fast sampling").'
            )
        },
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": (
                "torch.compile the decoding forward (implies --static_cache). The first call compiles the model "
                'before it samples, so the flag is for long or many samples (timings: bench/RESULTS.md, "Fast '
                'sampling"). Same seed, same MIDI bytes as without it on CPU (tested with aot_eager; seen '
                "with inductor in bench/RESULTS.md), but inductor may reorder float sums, so on another machine "
                "or a GPU a draw can change."
            )
        },
    )
    compile_backend: str = field(
        default="inductor",
        metadata={
            "help": (
                "torch.compile backend for --compile (inductor; eager or aot_eager only check that the model compiles)."
            )
        },
    )

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """One-line InputErrors for the values that are set (all of them, once resolved)."""
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise InputError(f"--guidance_scale {self.guidance_scale}: must be >= 0 (1 = no guidance)")
        if self.temperature is not None and self.temperature <= 0:
            raise InputError(f"--temperature {self.temperature}: must be > 0")
        if self.top_k is not None and self.top_k < 0:
            raise InputError(f"--top_k {self.top_k}: must be >= 0 (0 = off)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError(f"--top_p {self.top_p}: must be within (0, 1]")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise InputError(f"--repetition_penalty {self.repetition_penalty}: must be > 0 (1 = off)")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise InputError(f"--max_new_tokens {self.max_new_tokens}: must be at least 1")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def resolve(self, defaults: dict, context: int | None = None) -> SamplingSettings:
        """Every value set: the given ones over `defaults` (`midilm.core.modeling.sampling_defaults`), else
        neutral; checked. `context`: the model's, which bounds the default max_new_tokens (a length asked
        beyond it is written in windows); None when the length is not the caller's to choose (an
        accompaniment's is the melody's): then max_new_tokens stays unset."""
        longest = None if context is None else body_room(context)
        chosen = {}
        for name, neutral in NEUTRAL.items():
            value = getattr(self, name)
            value = defaults.get(name) if value is None else value
            chosen[name] = TYPES[name](neutral if value is None else value)
        chosen["seed"] = int(self.seed)
        if longest is None:
            chosen["max_new_tokens"] = chosen["min_new_tokens"] = None
        elif self.max_new_tokens is None:
            chosen["max_new_tokens"] = min(defaults.get("max_new_tokens") or longest, longest)
        else:
            chosen["max_new_tokens"] = int(
                self.max_new_tokens
            )  # beyond the context: written in windows (midilm.sampling.generation)
        if longest is not None and self.min_new_tokens is not None:
            chosen["min_new_tokens"] = min(int(self.min_new_tokens), chosen["max_new_tokens"])
        resolved = replace(self, **chosen)
        resolved.check()
        return resolved

    def effective_guidance_scale(self, composer_ids, none_id: int) -> float:
        """The one rule for "guided or not": guidance needs a scale other than 1 and a composer to guide
        towards; guiding COMPOSER_NONE towards itself is plain sampling, so all-unconditional rows are never doubled."""
        if self.guidance_scale != 1.0 and any(i != none_id for i in composer_ids):
            return self.guidance_scale
        return 1.0

    def sampler(self, guidance_scale: float, seed_offset: int = 0) -> CFGSamplingProcessor:
        """Our CFG processor, which mixes, samples and forces the token: put it last."""
        return CFGSamplingProcessor(
            guidance_scale,
            self.temperature,
            self.top_k,
            self.top_p,
            self.repetition_penalty,
            seed=self.seed + seed_offset,
        )

    def record(self, guidance_scale: float, guard_bounds: dict | None, **facts) -> dict:
        """The settings as each sample's JSON holds them (the resolved values, then what the plan found)."""
        out = {name: getattr(self, name) for name in NEUTRAL}
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        if self.min_new_tokens is not None:
            out["min_new_tokens"] = self.min_new_tokens
        out.update({"effective_guidance_scale": guidance_scale, "grammar": bool(self.grammar), "seed": self.seed})
        prompt_tokens = facts.pop("prompt_tokens", None)
        if prompt_tokens is not None:
            out["prompt_tokens"] = prompt_tokens
        out.update({"guard": guard_bounds is not None, "guard_bounds": guard_bounds, **facts})
        return out


def greedy_config(
    max_new_tokens: int, bos: int, eos: int, pad: int, min_new_tokens: int | None = None
) -> GenerationConfig:
    """Greedy over the forced scores our CFG processor returns. Every sampling flag is set to its
    neutral value because generate() fills unset ones from the model's generation_config.json (which
    would add a second repetition penalty and transformers' own CFG)."""
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        guidance_scale=1.0,
        repetition_penalty=1.0,
        temperature=1.0,
        top_k=50,  # transformers' neutral value for greedy search; our processor applies top_k
        top_p=1.0,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def fast_sampling(
    gen_config: GenerationConfig,
    static_cache: bool,
    compile: bool,
    backend: str = "inductor",
    device: str | torch.device = "cpu",
) -> dict:
    """Set `gen_config` for transformers' static KV cache and compiled decoding; returns what was set, for the record.

    `compile` implies the static cache: transformers compiles the forward of the decoding steps (the
    prompt's forward stays eager) only with a cache of fixed shape, and it does so itself
    (`compile_config`), on CPU too once told to. Our processors run outside the compiled forward,
    so CFG and the grammar are unchanged. The first call compiles (on the 2-core CPU VM, inductor
    took 25-50 s for the tiny model); later calls of the same shape in the same process reuse it.
    A static cache alone turns transformers' automatic compile off, so the flag means what it says.
    """
    if not (static_cache or compile):
        return {"static_cache": False, "compile": False}
    if compile:
        from torch._dynamo import list_backends  # torch's compiler stack: loaded only when compiling

        known = list_backends(exclude_tags=())
        if backend not in known:
            raise InputError(
                f"--compile_backend {backend!r}: not a torch.compile backend here; choose one of: {', '.join(known)}"
            )
        # CUDA graphs ("reduce-overhead", transformers' default mode) exist for inductor only.
        config = CompileConfig(backend=backend) if backend == "inductor" else CompileConfig(backend=backend, mode=None)
        if torch.device(device).type != "cuda":
            config._compile_all_devices = True  # transformers' own switch: otherwise it compiles on accelerators only
        gen_config.update(cache_implementation="static", compile_config=config, disable_compile=False)
        return {"static_cache": True, "compile": True, "compile_backend": backend}
    gen_config.update(cache_implementation="static", disable_compile=True)
    return {"static_cache": True, "compile": False}
