"""The web page (gradio) behind `app.py`: a composer, the sampling settings and an optional MIDI file to
continue in, a melody to accompany or a piece whose bars to rewrite (infill); audio, piano roll, MIDI download and
the equivalent `generate.py` command line out.

The model is loaded once. Each request is one `prepare_generation` + `plan.run` + `write_samples`,
the same calls as generate.py, so a result is reproduced by the command line the page shows. A length
beyond the model's context (up to LONGEST_CONTEXTS contexts) is written in windows, as generate.py
writes it (midilm.sampling.generation); the page says so before and after.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from midilm.app_messages import length_note, page_error, relay_warnings, result_note
from midilm.core.errors import InputError
from midilm.core.modeling import context_length, load_midilm_dir, model_tasks, sampling_defaults
from midilm.core.rows import body_room
from midilm.core.tokenizer import NONE
from midilm.sampling.accompaniment import prepare_accompaniment
from midilm.sampling.generation import load_model, prepare_generation
from midilm.sampling.infilling import prepare_infill
from midilm.sampling.sample_files import (
    accompaniment_files,
    check_soundfont,
    infill_files,
    sample_files,
    write_accompaniments,
    write_infills,
    write_samples,
)
from midilm.sampling.settings import SamplingSettings

# Settings shown in the page and repeated, explicitly, on the equivalent command line.
SETTING_FLAGS = ("max_new_tokens", "guidance_scale", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
KEEP_RESULTS = 32  # result folders kept on disk; gradio serves its own copies of the files shown
# The length control reaches this many contexts: a long piece on a 2-core CPU (4 contexts of the demo model took 4.8 s),
# and one request holds the queue for at most that long.
LONGEST_CONTEXTS = 4


@dataclass
class AppArguments:
    model_dir: str = field(default="model_output", metadata={"help": "Model folder written by train.py."})
    host: str | None = field(
        default=None, metadata={"help": "Address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)."}
    )
    port: int | None = field(default=None, metadata={"help": "Port (default: $GRADIO_SERVER_PORT, else 7860)."})
    soundfont: str | None = field(
        default=None, metadata={"help": "General MIDI soundfont for the audio (default: one found locally)."}
    )


class TokenProgress(StoppingCriteria):
    """Reports each generated token to the page's progress bar; never stops generation itself. It counts
    its calls (one per decoding step), so the count runs on across the windows of a long piece."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.done += 1
        self.progress((self.done, self.total), desc="sampling", unit="tokens")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def command_line(
    model_dir: str,
    composer: str,
    settings: dict,
    prompt_name: str | None,
    prompt_bars: int | None,
    melody_name: str | None = None,
    infill: tuple[str, str] | None = None,
) -> str:
    """The generate.py call that writes the same MIDI file (on the same kind of device); `infill`: the rewritten
    file's name and its bars (`9-12`)."""
    words = ["python", "generate.py", "--model_dir", model_dir, "--composer", composer]
    for name in SETTING_FLAGS:
        if not ((melody_name or infill) and name == "max_new_tokens"):  # a melody or a span sets its own length
            words += [f"--{name}", str(settings[name])]
    if melody_name is not None:
        words += ["--melody_midi", melody_name]
    if infill is not None:
        words += ["--infill_midi", infill[0], "--bars", infill[1]]
    if prompt_name is not None:
        words += ["--prompt_midi", prompt_name]
        if prompt_bars is not None:
            words += ["--prompt_bars", str(prompt_bars)]
    return shlex.join(words + ["--wav", "--png"])


class LoadedModel:
    """The loaded model and its defaults; `generate` serves one request."""

    def __init__(self, model_dir: str | Path, soundfont: str | None = None, device: str | None = None):
        self.model_dir = str(model_dir)
        config, _, self.composer_map = load_midilm_dir(model_dir)  # one clear error before the weights are read
        self.context = context_length(config)
        self.infills = "infill" in model_tasks(config)
        self.defaults = SamplingSettings().resolve(sampling_defaults(model_dir), self.context)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.soundfont, self.audio_problem = check_soundfont(soundfont), None
        except InputError as err:
            if soundfont is not None:  # asked for by name: a wrong path is the user's to fix
                raise
            self.soundfont, self.audio_problem = (
                None,
                str(err).removeprefix("--wav: "),
            )  # the page goes on without audio
        self.model = load_model(model_dir, self.device)
        self.results = Path(tempfile.mkdtemp(prefix="midilm-app-"))

    def close(self) -> None:
        shutil.rmtree(self.results, ignore_errors=True)

    def generate(
        self,
        composer,
        max_new_tokens,
        guidance_scale,
        temperature,
        top_k,
        top_p,
        seed,
        prompt_midi,
        prompt_bars,
        melody_midi=None,
        infill_midi=None,
        infill_bars=None,
        progress=gr.Progress(),  # noqa: B008  (gradio finds the page's progress bar by this default)
    ):
        """One sample: (WAV, piano-roll PNG, MIDI file, settings, command line) for the page."""
        prompt_bars = int(prompt_bars) if prompt_bars else None  # 0 or empty: the whole upload
        upload = infill_midi or melody_midi or prompt_midi
        settings = self.page_settings(
            guidance_scale, temperature, top_k, top_p, seed, max_new_tokens, bool(melody_midi or infill_midi), upload
        )
        if infill_midi:
            return self.infill(composer, settings, infill_midi, infill_bars, bool(prompt_midi or melody_midi), progress)
        if melody_midi:
            return self.accompany(composer, settings, prompt_midi, melody_midi, progress)
        return self.continuation(composer, settings, prompt_midi, prompt_bars, progress)

    def page_settings(
        self, guidance_scale, temperature, top_k, top_p, seed, max_new_tokens, sets_own_length: bool, upload
    ) -> SamplingSettings:
        """The page's controls as sampling settings; a bad value is the page's error. The repetition penalty is
        not a control: the model's default, on the record. `sets_own_length`: a melody or a span does."""
        try:
            return SamplingSettings(
                guidance_scale=float(guidance_scale),
                temperature=float(temperature),
                top_k=int(top_k),
                top_p=float(top_p),
                repetition_penalty=self.defaults.repetition_penalty,
                seed=int(seed or 0),
                max_new_tokens=None if sets_own_length else int(max_new_tokens),
            )
        except InputError as err:
            raise page_error(err, upload) from None

    def continuation(self, composer, settings: SamplingSettings, prompt_midi, prompt_bars, progress):
        """A new piece, or the continuation of an uploaded one, through generate.py's own path."""
        prompt_name = Path(prompt_midi).name if prompt_midi else None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                plan = prepare_generation(
                    self.model_dir,
                    composer,
                    1,
                    settings,
                    prompt_midi=prompt_midi,
                    prompt_bars=prompt_bars if prompt_midi else None,
                    device=self.device,
                )
            relay_warnings(caught, prompt_midi)
            folder = Path(tempfile.mkdtemp(dir=self.results))
            files = sample_files(plan, folder, wav=self.soundfont is not None, png=True, overwrite=False)[0]

            progress((0, plan.settings["max_new_tokens"]), desc="sampling", unit="tokens")
            criteria = StoppingCriteriaList([TokenProgress(progress, plan.settings["max_new_tokens"])])
            with warnings.catch_warnings(record=True) as caught:  # a long piece whose bar fills a window ends early
                warnings.simplefilter("always")
                output = plan.run(self.model, stopping_criteria=criteria)
            relay_warnings(caught, prompt_midi)
            progress(1.0, desc="rendering audio and piano roll")
            record = {
                "model_dir": self.model_dir,
                "prompt_midi": prompt_name,
                "prompt_bars": prompt_bars,
                "device": self.device,
            }
            write_samples(plan, output, [files], record, self.soundfont)
        except InputError as err:
            raise page_error(err, prompt_midi) from None
        self._prune()

        new_tokens = plan.new_tokens(plan.sample_ids(output)[0])
        settings = {
            "composer": plan.composers[0],
            **plan.settings,
            "prompt_midi": prompt_name,
            "prompt_bars": prompt_bars,
            "new_tokens": new_tokens,
            "windows": plan.windows,
        }
        composer_flag = NONE.lower() if plan.composers[0] == NONE else plan.composers[0]
        command = command_line(self.model_dir, composer_flag, plan.settings, prompt_name, prompt_bars)
        wav = str(files[".wav"]) if ".wav" in files else None
        files_out = [str(files[".mid"]), str(files[".json"])]
        return wav, str(files[".png"]), files_out, settings, command, result_note(plan, new_tokens)

    def accompany(self, composer, settings: SamplingSettings, prompt_midi, melody_midi, progress):
        """The full piece around an uploaded melody, through generate.py's own accompaniment path."""
        melody_name, seed = Path(melody_midi).name, settings.seed
        try:
            if prompt_midi:
                raise InputError(
                    "--melody_midi: accompany a melody or continue a MIDI file, not both; clear one upload"
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                job = prepare_accompaniment(self.model_dir, melody_midi, composer, 1, settings)
            relay_warnings(caught, melody_midi)
            folder = Path(tempfile.mkdtemp(dir=self.results))
            files = accompaniment_files(
                job.composers, folder, wav=self.soundfont is not None, png=True, overwrite=False
            )
            progress(0.1, desc=f"accompanying {job.melody.num_bars} bars")
            with torch.no_grad():
                results = job.run(self.model)
            progress(1.0, desc="rendering audio and piano roll")
            record = {"model_dir": self.model_dir, "melody_midi": melody_name, "device": self.device}
            write_accompaniments(results, files, record, self.soundfont)
        except InputError as err:
            raise page_error(err, melody_midi) from None
        self._prune()
        files, result = files[0], results[0]
        settings = {
            "composer": result.composer,
            **result.settings,
            "seed": seed,
            "melody_midi": melody_name,
            "bars": result.bars,
        }
        flag = NONE.lower() if result.composer == NONE else result.composer
        command = command_line(
            self.model_dir, flag, {**vars(self.defaults), **result.settings, "seed": seed}, None, None, melody_name
        )
        wav = str(files[".wav"]) if ".wav" in files else None
        note = f"{result.composer}: an accompaniment of {result.bars} bars, written in {result.windows} window(s)."
        return wav, str(files[".png"]), [str(files[".mid"]), str(files[".json"])], settings, command, note

    def infill(self, composer, settings: SamplingSettings, infill_midi, bars, other_upload: bool, progress):
        """Bars of an uploaded piece rewritten, through generate.py's own infill path (`midilm.sampling.infilling`)."""
        name, seed, bars = Path(infill_midi).name, settings.seed, str(bars or "").strip()
        try:
            if other_upload:
                raise InputError(
                    "--infill_midi: rewrite bars of a piece, or continue a file or accompany a melody, not both; "
                    "clear one upload"
                )
            if not bars:
                raise InputError("--bars: give the bars to rewrite, first-last counted from 1 (9-12), or one bar")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                job = prepare_infill(self.model_dir, infill_midi, bars, composer, 1, settings)
            relay_warnings(caught, infill_midi)
            folder = Path(tempfile.mkdtemp(dir=self.results))
            files = infill_files(job.composers, folder, wav=self.soundfont is not None, png=True, overwrite=False)
            first, last = job.bars
            progress(0.1, desc=f"rewriting bars {first}-{last} of {job.piece.num_bars}")
            results = job.run(self.model)
            progress(1.0, desc="rendering audio and piano roll")
            record = {"model_dir": self.model_dir, "infill_midi": name, "device": self.device}
            write_infills(results, files, record, self.soundfont)
        except InputError as err:
            raise page_error(err, infill_midi) from None
        self._prune()
        files, result = files[0], results[0]
        span = f"{first}-{last}"
        settings = {
            "composer": result.composer,
            **result.settings,
            "seed": seed,
            "infill_midi": name,
            "bars": list(result.bars),
            "context_bars": result.context_bars,
            "replaced_notes": result.replaced_notes,
            "new_notes": result.span.note_num(),
        }
        flag = NONE.lower() if result.composer == NONE else result.composer
        command = command_line(
            self.model_dir,
            flag,
            {**vars(self.defaults), **result.settings, "seed": seed},
            None,
            None,
            infill=(name, span),
        )
        wav = str(files[".wav"]) if ".wav" in files else None
        note = (
            f"{result.composer}: bars {span} of {job.piece.num_bars} rewritten ({result.replaced_notes} notes "
            f"replaced by {result.span.note_num()}); every other note as in {name}."
        )
        return wav, str(files[".png"]), [str(files[".mid"]), str(files[".json"])], settings, command, note

    def _prune(self) -> None:
        folders = sorted(self.results.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[:-KEEP_RESULTS]:
            shutil.rmtree(old, ignore_errors=True)

    def composer_choices(self) -> list[tuple[str, str]]:
        counts = self.composer_map.pieces or [0] * len(self.composer_map.names)
        named = [(f"{name} ({n} pieces)" if n else name, name) for name, n in zip(self.composer_map.names, counts)]
        return named + [("unconditional (no composer)", NONE.lower())]


def build_app(model_dir: str | Path, soundfont: str | None = None, device: str | None = None) -> gr.Blocks:
    """The page for one model folder; `demo.loaded_model` holds the model (loaded once). Raises InputError when
    `model_dir` is not a midilm model folder."""
    loaded = LoadedModel(model_dir, soundfont, device)
    intro = page_intro(loaded)

    # analytics off: no telemetry or version check leaves the machine (as GRADIO_ANALYTICS_ENABLED=False)
    with gr.Blocks(title="midilm", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column(scale=1):
                composer, length, length_info, *sampling = setting_controls(loaded)
                uploads = upload_controls(loaded)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                outputs = result_controls()
        # the note follows the control at once, also while a sample is being written (outside the queue)
        length.change(
            lambda n: length_note(n, loaded.context),
            length,
            length_info,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        button.click(loaded.generate, [composer, length, *sampling, *uploads], outputs, api_name="generate")
    demo.loaded_model = loaded
    demo.queue(default_concurrency_limit=1)  # one sampling at a time; further requests wait in the queue
    return demo


def page_intro(loaded: LoadedModel) -> str:
    """The page's heading: the model, its composers, its context and device, and why there is no audio."""
    names = ", ".join(loaded.composer_map.names)
    intro = (
        f"# midilm\nModel `{Path(loaded.model_dir).name}`: {len(loaded.composer_map.names)} composers ({names}), "
        f"context {loaded.context} tokens, sampling on {loaded.device}."
    )
    if loaded.audio_problem:
        intro += f"\n\nNo audio here: {loaded.audio_problem}."
    return intro


def setting_controls(loaded: LoadedModel) -> tuple:
    """The composer, the length (and the note under it) and the sampling settings, at the model's defaults:
    (composer, length, length note, guidance, temperature, top-k, top-p, seed)."""
    d = vars(loaded.defaults)
    room = body_room(loaded.context)
    longest = LONGEST_CONTEXTS * room
    composer = gr.Dropdown(loaded.composer_choices(), value=loaded.composer_map.names[0], label="Composer")
    length = gr.Slider(
        1,
        longest,
        value=d["max_new_tokens"],
        step=1,
        label="Length (tokens)",
        info=f"at most {longest}; beyond {room}, the model's context less BOS and the composer, in windows",
        elem_id="length",
    )
    length_info = gr.Markdown(length_note(d["max_new_tokens"], loaded.context), elem_id="length-note")
    guidance = gr.Slider(
        0.0,
        max(10.0, d["guidance_scale"]),
        value=d["guidance_scale"],
        step=0.1,
        label="Guidance scale",
        info="classifier-free guidance towards the composer; 1 = off",
    )
    temperature = gr.Slider(
        min(0.05, d["temperature"]),
        max(2.0, d["temperature"]),
        value=d["temperature"],
        step=0.05,
        label="Temperature",
    )
    top_k = gr.Slider(0, max(200, d["top_k"]), value=d["top_k"], step=1, label="Top-k", info="0 = off")
    top_p = gr.Slider(min(0.05, d["top_p"]), 1.0, value=d["top_p"], step=0.01, label="Top-p", info="1 = off")
    seed = gr.Number(0, precision=0, minimum=0, label="Seed", info="same seed and settings, same music")
    return composer, length, length_info, guidance, temperature, top_k, top_p, seed


def upload_controls(loaded: LoadedModel) -> tuple:
    """The optional uploads, each in its accordion: (MIDI to continue, its bars, melody, MIDI to rewrite, its
    bars)."""
    with gr.Accordion("Continue a MIDI file (optional)", open=False, elem_id="continue"):
        prompt_midi = gr.File(file_types=[".mid", ".midi"], label="MIDI to continue", elem_id="prompt-midi")
        prompt_bars = gr.Number(0, precision=0, minimum=0, label="Bars to continue", info="its first N bars; 0 = all")
    with gr.Accordion("Accompany a melody (optional)", open=False, elem_id="accompany"):
        melody_midi = gr.File(file_types=[".mid", ".midi"], label="Melody to accompany", elem_id="melody-midi")
    infill_info = (
        "every note outside the bars stays as it is"
        if loaded.infills
        else "this model was not trained for infilling (prepare_dataset.py --tasks continuation,infill)"
    )
    with gr.Accordion("Rewrite bars of a MIDI file (infill, optional)", open=False, elem_id="infill"):
        infill_midi = gr.File(file_types=[".mid", ".midi"], label="MIDI to rewrite", elem_id="infill-midi")
        infill_bars = gr.Textbox(
            "", label="Bars to rewrite", placeholder="9-12", info=infill_info, elem_id="infill-bars"
        )
    return prompt_midi, prompt_bars, melody_midi, infill_midi, infill_bars


def result_controls() -> list:
    """What a request fills, in `generate`'s order: [audio, piano roll, downloads, settings, command, note]."""
    audio = gr.Audio(label="Listen", type="filepath", interactive=False, elem_id="audio")
    roll = gr.Image(label="Piano roll", type="filepath", interactive=False, elem_id="piano-roll")
    download = gr.File(
        label="MIDI and its settings (JSON)", file_count="multiple", interactive=False, elem_id="download"
    )
    command = gr.Textbox(
        label="The same from the command line",
        lines=2,
        max_lines=6,
        buttons=["copy"],
        interactive=False,
        elem_id="command",
    )
    result = gr.Markdown(elem_id="result-note")
    with gr.Accordion("Settings used", open=False):
        settings = gr.JSON(label="Settings", elem_id="settings")
    return [audio, roll, download, settings, command, result]
