"""A web page for a trained midilm model: `python app.py --model_dir model_output` (http://127.0.0.1:7860).

A thin wrapper around `midilm app` (midilm/commands/app.py: the flags, the examples and the --help
text), reading the config.json beside this script. Needs `pip install -r requirements-app.txt` (gradio).
As a Hugging Face Space, this file runs beside the model folder (GRADIO_SERVER_NAME sets the address).
"""

from pathlib import Path

from midilm.commands import app
from midilm.core.cli import run

# Optional overrides of the package defaults, beside this script (may be partial, empty or absent).
CONFIG_FILE = Path(__file__).with_name("config.json")


def main() -> None:
    app.main(config_file=CONFIG_FILE)


if __name__ == "__main__":
    run(main)
