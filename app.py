"""A web page for a trained midilm model: pick a composer, guidance, length and the other sampling
settings, optionally upload a MIDI file to continue; hear the result, see its piano roll, download it.

    python app.py --model_dir model_output                      # http://127.0.0.1:7860
    python app.py --model_dir model_output --host 127.0.0.1 --port 7861

Needs `pip install -r requirements-app.txt` (gradio). Sampling defaults come from the model's
generation_config.json; the page shows the `generate.py` command line that reproduces each result.
As a Hugging Face Space, this file runs beside the model folder (GRADIO_SERVER_NAME sets the address).
"""

from pathlib import Path

import signal
import sys

from midilm.app import AppArguments, build_app
from midilm.cli import parse_args, run

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    args, _ = parse_args((AppArguments,), ("app",), description=__doc__, config_file=CONFIG_FILE)

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
