"""TensorBoard samples during training (MIDI, piano rolls and audio per composer), and how many evaluations
may log (none under FSDP)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from midilm.core.tokenizer import ComposerMap
from midilm.sampling.generation import sample_scores
from midilm.sampling.render import AudioUnavailable, piano_roll_array, render_audio
from midilm.sampling.sample_files import sample_stem
from midilm.sampling.settings import SamplingSettings


class SampleLoggingCallback(TrainerCallback):
    """At each evaluation: a few samples per composer, written as MIDI and logged to TensorBoard as a
    piano roll and as audio you can play in the browser."""

    def __init__(
        self,
        tokenizer,
        composer_map: ComposerMap,
        samples_per_composer: int,
        max_new_tokens: int,
        soundfont: str | None,
        writer_source,
    ):
        self.tokenizer, self.composer_map = tokenizer, composer_map
        self.samples_per_composer, self.max_new_tokens = samples_per_composer, max_new_tokens
        self.soundfont, self.writer_source = soundfont, writer_source
        self._audio_warned = False

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.samples_per_composer <= 0 or model is None:
            return
        writer = self.writer_source()
        out_dir = Path(args.output_dir) / "samples" / f"step-{state.global_step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = model.training
        model.eval()
        samples = sample_scores(
            model,
            self.tokenizer,
            self.composer_map,
            self.composer_map.names,
            self.samples_per_composer,
            SamplingSettings(max_new_tokens=self.max_new_tokens, seed=state.global_step),
        )
        model.train(was_training)
        for i, (composer, score) in enumerate(samples):
            stem = sample_stem(
                composer, i % self.samples_per_composer
            )  # the name as generate.py writes it: no `/` from `AC/DC`
            tag = f"samples/{stem}"
            score.dump_midi(out_dir / f"{stem}.mid")
            if writer is None:
                continue
            writer.add_image(
                f"{tag}/piano_roll",
                piano_roll_array(score, title=f"{composer} · step {state.global_step}"),
                state.global_step,
                dataformats="HWC",
            )
            try:
                audio, rate = render_audio(score, soundfont=self.soundfont), 22050
                writer.add_audio(
                    f"{tag}/audio", torch.from_numpy(audio).unsqueeze(0), state.global_step, sample_rate=rate
                )
            except AudioUnavailable as err:
                if not self._audio_warned:
                    print(f"no audio in TensorBoard: {err}")
                    self._audio_warned = True
        if writer is not None:
            writer.flush()


def evaluation_samples(trainer: Trainer, samples_per_composer: int) -> int:
    """The samples per composer that evaluations may log, after one line on what FSDP does here.

    Under FSDP, sample logging is off: it runs generate() on rank 0 alone, which a model sharded over
    the processes cannot serve. And FSDP asked for on a machine without GPUs is not FSDP: accelerate
    keeps FSDP for accelerators (GPU, XPU, NPU, ...) and on CPU builds plain DDP, dropping the FSDP
    settings without a word.
    """
    requested = bool(trainer.args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if requested and not trainer.is_fsdp_enabled and trainer.is_world_process_zero():
        print(
            f"FSDP was asked for, but accelerate runs it on GPUs and other accelerators only: this run is "
            f"{trainer.accelerator.distributed_type.value} over {trainer.args.world_size} process(es), each holding "
            "the whole model"
        )
    if trainer.is_fsdp_enabled and samples_per_composer > 0:
        if trainer.is_world_process_zero():
            print(
                "sample logging at evaluation is off under FSDP (the model is sharded over the processes); generate "
                "from the saved folder"
            )
        return 0
    return samples_per_composer
