# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates .venv and installs what it needs when that is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fer2013-happy-sad
RUN ?= runs/demo
EPOCHS ?= 30
SEED ?= 0

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

demo: venv
	@test -d "$(DATA)" || { echo "make demo: no photos at $(DATA). Lay out your own as DIR/happy/*.jpg and DIR/sad/*.jpg and run: make demo DATA=DIR" >&2; exit 1; }
	$(PY) -m train "$(DATA)" --out $(RUN) --epochs $(EPOCHS) --seed $(SEED)
	$(PY) -m export $(RUN)
	$(PY) -m benchmarks $(RUN)/export/model_float32.tflite $(RUN)/export/model_int8.tflite \
	    $(RUN)/export/model_float32.onnx $(RUN)/export/model_int8.onnx \
	    --split $(RUN)/split.json --json $(RUN)/bench.json
	$(PY) -m edge classify $(RUN)/export/model_int8.tflite \
	    $$($(PY) -c "from edge.dataset import read_split, split_items; s = read_split('$(RUN)/split.json'); print(' '.join(str(p) for p, _ in split_items(s, 'test')[::300]))")
	@echo
	@echo "make demo: done. Artifacts:"
	@echo "  $(RUN)/model.keras, metrics.json, curves.png, history.csv, split.json   (training)"
	@echo "  $(RUN)/export/model_{float32,int8}.{tflite,onnx}, manifest.json         (export)"
	@echo "  $(RUN)/bench.json                                                       (benchmark)"

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
