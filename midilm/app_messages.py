"""What the web page says: the note under the length control, the note on a finished sample, and errors and
warnings worded for the page (the control to fix, not generate.py's flag; the uploaded file's own name)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from midilm.core.errors import InputError
from midilm.core.rows import body_room

# An error names the control to fix, not generate.py's flag.
CONTROL_LABELS = {
    "--composer": "Composer",
    "--max_new_tokens": "Length (tokens)",
    "--guidance_scale": "Guidance scale",
    "--temperature": "Temperature",
    "--top_k": "Top-k",
    "--top_p": "Top-p",
    "--prompt_midi": "MIDI to continue",
    "--prompt_bars": "Bars to continue",
    "--melody_midi": "Melody to accompany",
    "--infill_midi": "MIDI to rewrite",
    "--bars": "Bars to rewrite",
}


def length_note(max_new_tokens, context: int) -> str:
    """What the page says under the length control: one call, or windows beyond the context."""
    room = body_room(context)
    if max_new_tokens is None or int(max_new_tokens) <= room:
        return f"Up to {room} tokens fit the model's context ({context}): one pass."
    return (
        f"Beyond the model's context ({room} tokens after BOS and the composer): written in windows, each "
        "rereading BOS, the composer and the latest bars (up to half the context) and writing on."
    )


def result_note(plan, new_tokens: int) -> str:
    """What the page says about a finished sample: its length, and the windows it took."""
    windows = f"in {plan.windows} windows (longer than the context)" if plan.windows > 1 else "in one pass"
    return f"{plan.composers[0]}: {new_tokens} new tokens, written {windows}."


def page_message(message: str, upload: str | None) -> str:
    """An InputError or warning worded for the page: control labels for flags, the uploaded file's own name."""
    if upload:
        message = message.replace(upload, Path(upload).name)
    flag, _, rest = message.partition(" ")
    flag = flag.removesuffix(":")  # `--bars: ...` as well as `--bars 5-3: ...`
    return f"{CONTROL_LABELS[flag]}: {rest}" if flag in CONTROL_LABELS else message


def relay_warnings(caught: list, upload: str | None) -> None:
    """Warnings caught while preparing or sampling, each once, as the page's yellow toasts."""
    for message in dict.fromkeys(str(w.message).splitlines()[0] for w in caught):
        gr.Warning(page_message(message, upload))


def page_error(err: InputError, upload: str | None) -> gr.Error:
    """The page's error for bad input: it stays until closed (a 10-second toast is easy to miss), no stack trace."""
    return gr.Error(page_message(str(err), upload), duration=None, print_exception=False)
