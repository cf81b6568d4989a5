# midilm: `make demo` runs the whole job on the bundled music21 corpus; `make test` runs the tests.
# The scripts live beside this Makefile; the outputs go to the current folder (`make -f` from elsewhere works).
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
# Which Python: PYTHON=... if given, else the active virtual environment, else `.venv/` beside this
# Makefile, made with the system python3 (stock Debian/Ubuntu mark the system pip externally managed).
VENV := $(ROOT).venv
ifdef VIRTUAL_ENV
PYTHON ?= $(VIRTUAL_ENV)/bin/python
else
PYTHON ?= $(VENV)/bin/python
endif
# The demo's corpus subset and training budget: sized to finish within 20 minutes on 2 CPU cores.
DEMO_COMPOSERS ?= bach,monteverdi,palestrina
DEMO_FILES ?= 80
DEMO_STEPS ?= 1500
DEMO_SAMPLES ?= 2
DEMO_MIN_PIECES ?= 10
DEMO_TOKENS ?= 500
DEMO_EVAL ?=
# The evaluation's samples (the guidance sweep: 5 scales x 3 composers x 16, guard on and off): 256
# tokens keep it near 2.5 min on the 2-core VM (512 took about 5x longer).
DEMO_EVAL_TOKENS ?= 256
DEMO_EVAL_STEPS ?= 500
DEMO_AUGMENT ?= --augment
# The demo's last stage, preference tuning (see model_tuned/ below); empty leaves it out.
DEMO_TUNED ?= samples/eval_tuned/report.md
DEMO_TASKS ?= continuation,accompaniment,infill
# The demo harmonizes the melody (soprano) of this composer's first validation-split piece, and rewrites
# DEMO_INFILL_BARS of that same piece (a chorale phrase: 4 bars of the piece's own, every other note kept).
DEMO_MELODY_COMPOSER ?= bach
DEMO_INFILL_BARS ?= 5-8
# One sample beyond the context, written in windows: 4x the model's 512 tokens (7 windows, 40 s on the demo model
# on the 2-core VM under load).
DEMO_LONG_TOKENS ?= 2048

.PHONY: install install-browser lint test demo demo-full pipeline pipeline-full clean-demo clean-demo-full

$(VENV)/bin/python:
	python3 -m venv $(VENV)

install: $(filter $(VENV)/bin/python,$(PYTHON))
	@# Without an NVIDIA driver, torch's CPU build from PyTorch's CPU index, else from the default index (the script says why).
	PYTHON="$(PYTHON)" sh $(ROOT)scripts/install_torch.sh
	$(PYTHON) -m pip install --quiet -r $(ROOT)requirements.txt -r $(ROOT)requirements-app.txt -r $(ROOT)requirements-dev.txt
	@# --no-deps: tinysoundfont (WAV rendering) declares pyaudio, for live playback only, which fails to build without PortAudio's headers.
	$(PYTHON) -m pip install --quiet --no-deps -r $(ROOT)requirements-audio.txt
	cd $(ROOT) && $(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .

# The web page's end-to-end test drives Debian's Chromium (never a downloaded browser).
install-browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; }

# The style CI enforces (pyproject's [tool.ruff]): `ruff format` to fix the layout, `ruff check --fix` the imports.
lint: install
	cd $(ROOT) && $(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

test: install install-browser lint
	@# Offline, as CI is: any test that tries to reach the Hub or send telemetry fails instead.
	cd $(ROOT) && HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False $(PYTHON) -m pytest -q

# Each stage is a file target: re-running `make demo` redoes only what is missing, and never
# overwrites a finished stage (`make clean-demo` first to start over).
demo: install pipeline

# The demo with a longer training budget, judged on more samples; its outputs go to demo-full/. 8000 steps is
# the budget found to put every composer's adherence above 0.9 x the classifier's ceiling at the chosen
# guidance (4000 and 6000 steps did not; bench/RESULTS.md, "Steps against adherence"); about 56 min on 2 CPU cores.
FULL_STEPS ?= 8000
FULL_EVAL_SAMPLES ?= 64
demo-full: install pipeline-full

pipeline-full:
	mkdir -p demo-full && $(MAKE) -C demo-full -f $(ROOT)Makefile pipeline DEMO_STEPS=$(FULL_STEPS) \
		DEMO_EVAL="--adherence_samples_per_composer $(FULL_EVAL_SAMPLES) $(DEMO_EVAL)"

pipeline: samples/.generated samples/.accompanied samples/.infilled samples/long/.generated $(DEMO_TUNED)
	@echo "done: samples/ (MIDI, WAV, PNG per composer; accompaniment_$(DEMO_MELODY_COMPOSER)_0.*: a held-out melody harmonized; infill_$(DEMO_MELODY_COMPOSER)_0.*: bars $(DEMO_INFILL_BARS) of it rewritten), samples/long/ (a piece of $(DEMO_LONG_TOKENS) tokens), samples/eval/report.md$(if $(DEMO_TUNED), and model_tuned/ (preference-tuned; its README.md holds the before/after table) with samples/eval_tuned/report.md)"

data/dataset_dict.json:
	$(PYTHON) $(ROOT)prepare_dataset.py --composers $(DEMO_COMPOSERS) --max_files_per_composer $(DEMO_FILES) --min_pieces_per_composer $(DEMO_MIN_PIECES) --max_seq_len 512 --tasks $(DEMO_TASKS) $(DEMO_AUGMENT)

model_output/model.safetensors: data/dataset_dict.json
	$(PYTHON) $(ROOT)train.py --max_steps $(DEMO_STEPS) --eval_steps $(DEMO_EVAL_STEPS) --save_steps $(DEMO_EVAL_STEPS)

# The evaluation chooses the guidance default (model_output/config.json's midilm_guidance_scale) that generate.py then uses, so it runs first.
samples/eval/report.md: model_output/model.safetensors
	$(PYTHON) $(ROOT)evaluate_samples.py --model_dir model_output --dataset_dir data --output_dir samples/eval --write_default_guidance --max_new_tokens $(DEMO_EVAL_TOKENS) $(DEMO_EVAL)

samples/.generated: samples/eval/report.md
	$(PYTHON) $(ROOT)generate.py --model_dir model_output --composer all --num_samples $(DEMO_SAMPLES) --max_new_tokens $(DEMO_TOKENS) --output_dir samples --wav --png
	touch $@

# The held-out piece the demo harmonizes and rewrites: DEMO_MELODY_COMPOSER's first validation-split piece.
HELD_OUT = $(PYTHON) -c 'from midilm.data.held_out import held_out_piece; from midilm.core.cli import run; run(lambda: print(held_out_piece("data", "validation", "$(DEMO_MELODY_COMPOSER)")))'

samples/.accompanied: samples/.generated
	melody=$$($(HELD_OUT)) && \
		$(PYTHON) $(ROOT)generate.py --model_dir model_output --melody_midi "$$melody" --composer $(DEMO_MELODY_COMPOSER) --output_dir samples --wav --png
	touch $@

# Infilling: bars DEMO_INFILL_BARS of the same held-out piece rewritten in its composer's style (notes outside kept).
samples/.infilled: samples/.accompanied
	piece=$$($(HELD_OUT)) && \
		$(PYTHON) $(ROOT)generate.py --model_dir model_output --infill_midi "$$piece" --bars $(DEMO_INFILL_BARS) --composer $(DEMO_MELODY_COMPOSER) --output_dir samples --wav --png
	touch $@

# A piece longer than the context (EOS held off, so it is as long as asked): generate.py writes it in windows.
samples/long/.generated: samples/.infilled
	$(PYTHON) $(ROOT)generate.py --model_dir model_output --composer $(DEMO_MELODY_COMPOSER) --num_samples 1 --max_new_tokens $(DEMO_LONG_TOKENS) --min_new_tokens $(DEMO_LONG_TOKENS) --output_dir samples/long --wav --png
	touch $@

clean-demo:
	rm -rf data tokenizer model_output model_tuned model_tuned.tuning samples

clean-demo-full:
	rm -rf demo-full

# Preference tuning (issue 22), the demo's last stage: tune.py (rounds of sample -> score -> DPO with TRL against the
# composer classifier, vertical seconds, texture and copying; README "Preference tuning") on the demo model, then the
# tuned model's evaluation in samples/eval_tuned/, whose guidance sweep chooses its default again. It adds about
# 5.5 minutes to make demo on the 2-core VM (bench/RESULTS.md). DEMO_TUNED= (empty) leaves it out.
DEMO_TUNE ?=

model_tuned/model.safetensors: samples/eval/report.md
	$(PYTHON) $(ROOT)tune.py --model_dir model_output --dataset_dir data --output_dir model_tuned $(DEMO_TUNE)

samples/eval_tuned/report.md: model_tuned/model.safetensors
	$(PYTHON) $(ROOT)evaluate_samples.py --model_dir model_tuned --dataset_dir data --output_dir samples/eval_tuned --write_default_guidance --max_new_tokens $(DEMO_EVAL_TOKENS) $(DEMO_EVAL)

# Building on a trained model: `make demo-finetune` (after `make demo`, whose model and data it starts from) adds
# composers of the bundled corpus that the demo model never saw, prepared with its tokenizer (new composer tokens
# appended after its ids), fine-tunes it on them (train.py --init_from), judges every composer, old and new, with
# the base's data joined (evaluate_samples.py --base_dataset_dir), and samples each. Outputs: data_ft/,
# tokenizer_ft/, model_ft/, samples_ft/ (samples_ft/eval/report.md).
FT_COMPOSERS ?= mozart,trecento
FT_STEPS ?= 600
# Full fine-tuning with half the rows replayed from the demo's own data: of the levers measured (bench/RESULTS.md,
# "Fine-tuning"), the one that kept most of the demo composers' adherence while the new ones were learnt.
FT_METHOD ?= --replay_dataset data --replay_share 0.5
FT_EVAL ?= --adherence_scales 1,2,3
.PHONY: demo-finetune pipeline-finetune clean-demo-finetune
demo-finetune: install pipeline-finetune

pipeline-finetune: samples_ft/.generated
	@echo "done: model_ft/ (the demo model fine-tuned on $(FT_COMPOSERS)), samples_ft/ and samples_ft/eval/report.md"

data_ft/dataset_dict.json: model_output/model.safetensors
	$(PYTHON) $(ROOT)prepare_dataset.py --composers $(FT_COMPOSERS) --base_model model_output --output_dir data_ft --tokenizer_dir tokenizer_ft \
		--min_pieces_per_composer $(DEMO_MIN_PIECES) --max_seq_len 512 --tasks continuation $(DEMO_AUGMENT)

model_ft/model.safetensors: data_ft/dataset_dict.json
	$(PYTHON) $(ROOT)train.py --init_from model_output --dataset_dir data_ft --tokenizer_dir tokenizer_ft --output_dir model_ft \
		--max_steps $(FT_STEPS) --eval_steps $(FT_STEPS) --save_steps $(FT_STEPS) $(FT_METHOD)

samples_ft/eval/report.md: model_ft/model.safetensors
	$(PYTHON) $(ROOT)evaluate_samples.py --model_dir model_ft --dataset_dir data_ft --base_dataset_dir data --output_dir samples_ft/eval \
		--write_default_guidance --max_new_tokens $(DEMO_EVAL_TOKENS) $(FT_EVAL)

samples_ft/.generated: samples_ft/eval/report.md
	$(PYTHON) $(ROOT)generate.py --model_dir model_ft --composer all --num_samples $(DEMO_SAMPLES) --max_new_tokens $(DEMO_TOKENS) --output_dir samples_ft --wav --png
	touch $@

clean-demo-finetune:
	rm -rf data_ft tokenizer_ft model_ft samples_ft
