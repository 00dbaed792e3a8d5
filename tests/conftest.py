"""Shared fixtures: a tiny demo corpus, a tiny model config, study specs, and every storage backend."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]

#: A PyanNet small enough that an epoch on the tiny corpus takes about a second on 2 CPU cores.
TINY_OPTIONS: dict[str, Any] = {
    "duration": 2.0,
    "lstm": {"hidden_size": 16, "num_layers": 1, "bidirectional": True, "monolithic": True},
    "linear": {"hidden_size": 16, "num_layers": 1},
}
TINY_SIZES: dict[str, Any] = {"n_train": 3, "n_dev": 2, "n_test": 1, "file_duration": 20.0}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures the root logger (rich handler); put it back after the test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo diarization corpus (the pyannote folder layout + database.yml), shared by the session."""
    from tuner.data.demo import ensure_diarization_corpus

    return ensure_diarization_corpus(tmp_path_factory.mktemp("corpus") / "diarization", seed=0, **TINY_SIZES)


@pytest.fixture
def corpus_copy(demo_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the demo corpus that a test may break."""
    target = tmp_path / "corpus"
    shutil.copytree(demo_corpus, target)
    return target


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One throwaway PostgreSQL server on 127.0.0.1 for the whole session (``tuner.testing.postgres``).

    Without Debian's postgresql the tests that use it fail, saying how to install it; set
    ``TUNER_TESTS_WITHOUT_POSTGRES=1`` to skip them instead.
    """
    with local_postgres() as server:
        yield server


@contextlib.contextmanager
def local_postgres() -> Iterator[Any]:
    """A started :class:`tuner.testing.postgres.LocalPostgres`, stopped after the block whether it passed or not;
    without Debian's postgresql a failure saying how to install it (a skip with ``TUNER_TESTS_WITHOUT_POSTGRES=1``)."""
    from tuner.testing.postgres import LocalPostgres, PostgresUnavailable

    server = LocalPostgres()
    try:
        server.start()
    except PostgresUnavailable as error:
        if os.environ.get("TUNER_TESTS_WITHOUT_POSTGRES") == "1":
            pytest.skip(f"TUNER_TESTS_WITHOUT_POSTGRES=1: {error}")
        raise
    try:
        yield server
    finally:
        server.stop()


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'tuner.db'}"


def _postgresql(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    server = request.getfixturevalue("postgres_server")  # started by the first test that needs it
    name = f"store_{uuid.uuid4().hex[:12]}"
    yield server.new_database(name)
    server.drop_database(name)


#: Storage backends every store test runs against: each yields a fresh, empty store URL.
STORAGE_BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Iterator[str]]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


@pytest.fixture(params=sorted(STORAGE_BACKENDS))
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL, once per backend (as Optuna's StorageSupplier does)."""
    yield from STORAGE_BACKENDS[request.param](tmp_path, request)


@pytest.fixture
def make_spec(demo_corpus: Path, tmp_path: Path) -> Callable[..., Any]:
    """``make_spec(**overrides)``: a StudySpec training a tiny PyanNet on the tiny corpus."""
    return spec_factory(
        name="tiny",
        objective="pyannote_segmentation",
        search_space=REPO / "search_spaces" / "pyannote_scratch.yaml",
        data=demo_corpus,
        fixed={"batch_size": 8},
        options=TINY_OPTIONS,
        trainer={"limit_train_batches": 4},
    )


def spec_factory(*, search_space: Path, data: Path, **defaults: Any) -> Callable[..., Any]:
    """``make(**overrides)``: a tiny StudySpec (2 trials x 2 epochs) with ``defaults``, overridable."""
    from tuner import StudySpec

    def make(**overrides: Any) -> StudySpec:
        values: dict[str, Any] = {
            "search_space": str(search_space),
            "data": str(data),
            "n_trials": 2,
            "max_epochs": 2,
            **defaults,
        }
        values.update(overrides)
        return StudySpec(**values)

    return make


# ------------------------------------------------ tiny WavLM SV and SepFormer studies (shared by several modules)
TINY_WAVLM = {
    "relative_position_embedding": True,
    "num_buckets": 32,
    "max_distance": 128,
    "gru_rel_pos": True,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 3,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2,
    "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "conv_pos": 16,
    "conv_pos_groups": 2,
}
TINY_SV_OPTIONS = {
    "wavlm": TINY_WAVLM,
    "head": {"channels": 32, "emb_dim": 64},
    "crop_seconds": 1.0,
    "max_eval_seconds": 2.0,
}


@pytest.fixture(scope="session")
def sv_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tuner.data.demo import ensure_verification_corpus

    return ensure_verification_corpus(
        tmp_path_factory.mktemp("sv") / "verification", seed=0, utterances_per_speaker=4, n_dev_trials=40
    )


@pytest.fixture
def sv_spec(sv_corpus: Path) -> Callable[..., Any]:
    return spec_factory(
        name="sv_tiny",
        objective="wavlm_sv",
        search_space=REPO / "search_spaces" / "wavlm_sv.yaml",
        data=sv_corpus,
        fixed={"batch_size": 8},
        options=TINY_SV_OPTIONS,
        trainer={"limit_train_batches": 2},
    )


TINY_SEPFORMER = {
    "encoder_channels": 16,
    "kernel_size": 16,
    "stride": 8,
    "d_model": 16,
    "nhead": 2,
    "d_ffn": 32,
    "intra_layers": 1,
    "inter_layers": 1,
    "num_blocks": 2,
    "chunk_size": 50,
}
TINY_SEP_OPTIONS = {"model": TINY_SEPFORMER, "crop_seconds": 0.5, "max_eval_seconds": 1.0}


@pytest.fixture(scope="session")
def sep_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tuner.data.demo import ensure_separation_corpus

    return ensure_separation_corpus(tmp_path_factory.mktemp("sep") / "separation", seed=0, n_train=8, n_dev=3, n_test=2)


@pytest.fixture
def sep_spec(sep_corpus: Path) -> Callable[..., Any]:
    return spec_factory(
        name="sep_tiny",
        objective="sepformer_separation",
        search_space=REPO / "search_spaces" / "sepformer.yaml",
        data=sep_corpus,
        fixed={"batch_size": 2},
        options=TINY_SEP_OPTIONS,
        trainer={"limit_train_batches": 2},
    )


def fit_capturing(
    objective: Any, config: Any, max_epochs: int = 1, trainer: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any], Any]:
    """Fit, returning ``(result, module, parameters as they were when training started, trainer)``."""
    import lightning.pytorch as pl

    from tuner.training.fit import fit

    seen: dict[str, Any] = {}

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen["before"] = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
            seen["module"], seen["trainer"] = pl_module, trainer

    result = fit(
        objective,
        config,
        seed=0,
        max_epochs=max_epochs,
        trainer_options=trainer or {"limit_train_batches": 2},
        callbacks=[Snapshot()],
    )
    return result, seen["module"], seen["before"], seen["trainer"]


def changed(before: dict[str, Any], module: Any, prefix: str) -> list[bool]:
    """For each parameter of ``module`` under ``prefix``: did it change since ``before``?"""
    import torch

    return [not torch.equal(before[n], p.detach()) for n, p in module.named_parameters() if n.startswith(prefix)]
