# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install, run the pyannote study on the demo corpus (SQLite store)
#   make test   same install, then the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYANNOTE_METRICS_ENABLED ?= false

.PHONY: install browser postgres demo test lint clean-store

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing tuner and its dependencies (torch 2.11 + torchaudio 2.11 is about 3 GB: a few minutes)"
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# headless Chromium for the browser tests (report pages, optuna-dashboard): Debian's package
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL server binaries for the store tests (each test session starts a throwaway server on 127.0.0.1
# and removes it after: tuner.testing.postgres): Debian's package
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the store tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

demo: install
	$(BIN)/tuner run studies/pyannote_optim.py

test: install browser postgres
	$(BIN)/python -m pytest

clean-store:
	rm -rf storage/tuner.db storage/artifacts storage/cache
