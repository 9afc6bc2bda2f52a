# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates .venv and installs what it needs when that is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fer2013-happy-sad
# The other five FER2013 expressions and the FER+ crowd votes: with them the
# demo trains the happy/sad/neutral model on votes. With your own photos
# (make demo DATA=DIR) neither is used: the model learns DIR's folders.
OTHER ?= ../shared/data/fer2013-other
ifeq ($(origin DATA),file)
VOTES ?= ../shared/data/ferplus/votes.tsv
endif
# On votes the demo trains on both folders (about 20,000 faces) for as many
# epochs as TIME_BUDGET minutes hold (at most EPOCHS), so that make demo
# stays within 20 minutes on 2 cores however fast they are (24-29 epochs
# on a 2-core Zen 4 in bfloat16; fewer in float32). TIME_BUDGET= trains EPOCHS.
EPOCHS ?= $(if $(VOTES),40,30)
TIME_BUDGET ?= $(if $(VOTES),15)
VOTE_ARGS = $(if $(VOTES),--aux "$(OTHER)" --votes "$(VOTES)")
BUDGET_ARGS = $(if $(TIME_BUDGET),--time-budget $(TIME_BUDGET))
# The model ships averaged with its mirror image, in the graph (twice the
# multiply-accumulates; docs/tools.md). FLIP= ships the plain model.
FLIP ?= --flip-average
RUN ?= runs/demo
SEED ?= 0
# Largest accuracy drop (percentage points, validation split) an exported
# file may have; MAX_DROP=0 forces a refusal to see how the demo reports it.
MAX_DROP ?= 1
# make bench: thread counts to sweep, and where its files go (the README's
# results table is made from $(BENCH_OUT)/bench.json; bench.md holds every column).
BENCH_THREADS ?= 1,2
BENCH_OUT ?= $(RUN)/bench
BENCH_MODELS = $(RUN)/export/model_float32.tflite $(RUN)/export/model_int8.tflite \
	$(RUN)/export/model_float32.onnx $(RUN)/export/model_int8.onnx

.PHONY: demo accurate docs lock test wheel fuzz bench bench-wild quant-check edge-speed preview-cost soak pi-check picamera-check newcomer venv clean

venv: $(VENV)/.installed

# Exact versions from constraints.txt (pyproject.toml's extras give ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# setuptools >= 77 reads the SPDX licence field; the wheel test builds
	# without isolation, with the venv's own setuptools.
	$(PY) -m pip install --quiet "setuptools==80.9.0" "wheel==0.45.1"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

# Rewrite constraints.txt from the venv, after an extra in pyproject.toml changed.
lock: venv
	@{ sed -n '1,/^# Regenerate/p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^happysad'; } > constraints.txt.tmp
	@mv constraints.txt.tmp constraints.txt

demo: venv
	@test -d "$(DATA)" || { echo "make demo: no photos at $(DATA). Lay out your own as DIR/happy/*.jpg and DIR/sad/*.jpg and run: make demo DATA=DIR" >&2; exit 1; }
	$(PY) -m happysad.train "$(DATA)" $(VOTE_ARGS) $(BUDGET_ARGS) $(FLIP) --out $(RUN) --epochs $(EPOCHS) --seed $(SEED) --deterministic --overwrite
	@# A refused file does not stop the demo: the files that passed are
	@# benchmarked and used, and the demo exits 1 at the end naming it.
	@status=0; $(PY) -m happysad.export $(RUN) --max-drop $(MAX_DROP) || status=$$?; \
	rc=0; $(PY) -m happysad.benchmarks.demo $(RUN) $$status || rc=$$?; \
	echo; \
	echo "make demo: done. Artifacts:"; \
	echo "  $(RUN)/model.keras, metrics.json, data_report.json, split.json, config.json   (training)"; \
	echo "  $(RUN)/curves.png, reliability.png (on votes), confusion_matrix.png, samples.png, history.csv, logs/"; \
	echo "  $(RUN)/export/model_{float32,float16,int8}.tflite, model_{float32,int8}.onnx, manifest.json   (export)"; \
	echo "  $(RUN)/bench.json                                                            (benchmark)"; \
	echo "Next: make bench (the README's performance table), make edge-speed, make soak."; \
	exit $$rc

# The most accurate two-way happy/sad model measured on FER2013's folder
# labels (not trained on votes: the demo is the happy/sad/neutral model)
# (docs/accuracy.md; not clearly better on ordinary photos): the wide model
# at a 64x64 input, trained beside the other five FER2013 expressions
# (--aux), shipped as an ordinary two-class file (60.0M multiply-accumulates
# per face, 0.41 MB int8; two trainings scored 94.18% and 93.27% int8 on the
# demo's test split); benchmarked with and without the flip at test time.
# About 46 minutes of training on 2 cores. ACCURATE_ARCH=compact: the demo's
# model at 64x64 instead (32.9M, 0.22 MB, about 32 minutes).
ACCURATE ?= runs/accurate
ACCURATE_ARCH ?= wide
ACCURATE_EPOCHS ?= 30
accurate: venv
	$(PY) -m happysad.train "$(DATA)" --aux "$(OTHER)" --arch $(ACCURATE_ARCH) --img-size 64 --out $(ACCURATE) --epochs $(ACCURATE_EPOCHS) --seed $(SEED) --overwrite
	$(PY) -m happysad.export $(ACCURATE) --max-drop $(MAX_DROP)
	$(PY) -m happysad.benchmarks $(ACCURATE)/export/model_int8.tflite $(ACCURATE)/export/model_float32.tflite \
	    --split $(ACCURATE)/split.json --tta flip --json $(ACCURATE)/bench.json --markdown $(ACCURATE)/bench.md

# ruff's lint and format check first (rules in pyproject.toml), then the suite.
test: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q --durations=15

# docs/flags.md, every flag of the four tools, made from their parsers (a
# test fails when it is stale).
docs: venv
	$(PY) -m happysad.benchmarks.flags docs/flags.md

# The sdist and the wheel (dist/): happysad/edge, /train, /export, /benchmarks
# and the vendored detector models; no tests, no data.
wheel: venv
	$(PY) -m build --outdir dist .

# The property-based tests of hostile inputs (image bytes, arrays, manifest
# records; nested JSON into the manifest, split and --compare readers, split
# entries of every JSON type, special files in every reader path argument)
# with far more examples than make test: 300,000 per test (the special files'
# 36 cases are exhausted sooner), about 13 minutes on 2 cores before these.
FUZZ_EXAMPLES ?= 300000
fuzz: venv
	HAPPYSAD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider \
	    tests/test_hostile.py tests/test_hostile2.py tests/test_hostile_outputs.py tests/test_bad_input.py \
	    -k "arbitrary or malformed or preprocessing or special_files_as_camera_outputs"

# The suite behind the README's performance table, on an existing run: the
# four exported files and the Keras model, on the run's test split. It never
# trains or exports.
bench: venv
	@for f in $(BENCH_MODELS) $(RUN)/model.keras $(RUN)/split.json; do \
	    test -f "$$f" || { echo "make bench: $$f is missing; run make demo first (or make bench RUN=DIR for another run)" >&2; exit 1; }; \
	done
	$(PY) -m happysad.benchmarks $(BENCH_MODELS) $(RUN)/model.keras --split $(RUN)/split.json \
	    --threads $(BENCH_THREADS) --runs 1000 --min-seconds 2 --warmup 50 --cold-runs 5 \
	    --json $(BENCH_OUT)/bench.json --csv $(BENCH_OUT)/bench.csv \
	    --markdown $(BENCH_OUT)/bench.md --plot $(BENCH_OUT)/bench.png
	$(PY) -m happysad.benchmarks.readme $(BENCH_OUT)/bench.json README.md

# int8 against float32 for models trained with 10 seeds (short runs): the
# README's quantization table. Slow: about 3 minutes a seed on 2 cores.
quant-check: venv
	$(PY) -m happysad.benchmarks.quant_check "$(DATA)" --out runs/quant-check --seeds 10 --epochs 8

# The photo path per face detector on ordinary photos: the README's
# "Faces in ordinary photos" table.
WILD ?= ../shared/data/wild-dev
bench-wild: venv
	@test -f $(RUN)/export/model_int8.tflite || { echo "make bench-wild: run make demo first" >&2; exit 1; }
	@test -d "$(WILD)" || { echo "make bench-wild: no photos at $(WILD); pass WILD=DIR (one sub-folder per class)" >&2; exit 1; }
	$(PY) -m happysad.benchmarks $(RUN)/export/model_int8.tflite --pipeline --data "$(WILD)" \
	    --json $(RUN)/bench-wild.json --markdown $(RUN)/bench-wild.md

# The edge runtime's speed goals (per-face path vs invoke, camera loop vs
# detection + classification, cold start vs TensorFlow) on the demo run.
edge-speed: venv
	@test -f $(RUN)/export/model_int8.tflite || { echo "make edge-speed: run make demo first" >&2; exit 1; }
	$(PY) -m happysad.benchmarks.edge_speed $(RUN)/export/model_int8.tflite --keras $(RUN)/model.keras --data "$(DATA)"

# CPU per frame of the camera loop without --serve, with it and no viewer,
# and with one viewer (exit 3 when the preview costs over 5% unwatched).
preview-cost: venv
	@test -f $(RUN)/export/model_int8.tflite || { echo "make preview-cost: run make demo first" >&2; exit 1; }
	$(PY) -m happysad.benchmarks.preview_cost $(RUN)/export/model_int8.tflite --data "$(DATA)"

# The camera loop over a 10,000-frame video: frames, errors, memory growth.
soak: venv
	@test -f $(RUN)/export/model_int8.tflite || { echo "make soak: run make demo first" >&2; exit 1; }
	$(PY) -m happysad.benchmarks.soak $(RUN)/export/model_int8.tflite --data "$(DATA)"

# A newcomer's first hour, scripted: the wheel in a fresh venv with only the
# edge extra's packages, each first-session mistake's message and exit code (also in make test).
newcomer: venv
	$(PY) -m pytest -q tests/test_newcomer.py

# The edge install and its answers on 64-bit (arm64) and 32-bit (armhf)
# Raspberry Pi OS's base, Debian bookworm, under qemu emulation, compared
# with this machine's: root, x86_64 Linux; about 10 minutes the first time
# (the root filesystems are cached in ~/.cache/happysad). Report: runs/pi-check/report.md.
# PICAMERA=1 also runs picamera-check in an arm64 root (libcamera built there
# once, about 30 minutes under emulation): runs/pi-check/picamera-arm64/.
pi-check: venv
	$(PY) -m happysad.benchmarks.pi_check $(RUN)/export/model_int8.tflite $(RUN)/export/model_int8.onnx $(if $(PICAMERA),--picamera)

# The Raspberry Pi camera path (camera --source picamera) run end to end on
# libcamera's virtual camera, fed held-out faces, every frame's answer
# compared with classify on the same picture: root, Debian; the first run
# builds libcamera from Debian sid's source package (a few minutes; cached
# in ~/.cache/happysad). Report: runs/picamera-check/report.md; exit 3 when
# a frame disagrees beyond the tolerance.
picamera-check: venv
	$(PY) -m happysad.benchmarks.picamera_check $(RUN)/export/model_int8.tflite

clean:
	rm -rf $(VENV) runs
