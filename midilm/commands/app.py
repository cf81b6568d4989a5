"""A web page for a trained midilm model: pick a composer, guidance, length and the other sampling
settings, optionally upload a MIDI file to continue; hear the result, see its piano roll, download it.

    midilm app --model_dir model_output                      # http://127.0.0.1:7860
    midilm app --model_dir model_output --host 127.0.0.1 --port 7861

In a clone, `python app.py` takes the same flags and reads the config.json beside it.
Needs `pip install midilm[app]` (gradio). Sampling defaults come from the model's
generation_config.json; the page shows the `generate.py` command line that reproduces each result.
As a Hugging Face Space, app.py runs beside the model folder (GRADIO_SERVER_NAME sets the address).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from midilm.app import AppArguments, build_app
from midilm.core.cli import parse_args, run


def main(argv: list[str] | None = None, config_file: Path | None = None) -> None:
    args, _ = parse_args((AppArguments,), ("app",), argv, description=__doc__, config_file=config_file)

    # Load the model once (a missing or broken model folder stops here with one line)
    demo = build_app(args.model_dir, args.soundfont)

    # Serve until interrupted (Ctrl-C, or SIGTERM as a Space is stopped); share links stay off
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that `finally` removes the result files
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False)
    finally:
        demo.loaded_model.close()


if __name__ == "__main__":
    run(main)
