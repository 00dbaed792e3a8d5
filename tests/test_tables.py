"""The terminal's trial table: it fits the screen with every value whole, and shows only what a trial has."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from tuner._console import stdout_console
from tuner.reports.tables import rich_table, rows_of, sort_rows
from tuner.store.records import StudyRecord, TrialRecord

DER_STUDY = StudyRecord(
    name="pyannote_optim",
    objective="pyannote_segmentation",
    metric="DER",
    direction="minimize",
    components=("false alarm", "missed detection", "confusion"),
    search_space={
        "optimizer": {"choices": ["Adam", "AdamW", "RAdam", "NAdam"]},
        "schedule": {"choices": ["constant", "cosine"]},
        "batch_size": {"choices": [16, 32]},
        "lr": {"low": 1e-5, "high": 1e-2, "log": True},
        "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
        "unfrozen_layers": {"low": 0, "high": 4},
    },
)


def _trial(number: int, state: str, der: float | None, study: StudyRecord = DER_STUDY, **extra: Any) -> TrialRecord:
    config = {"optimizer": "AdamW", "schedule": "constant", "batch_size": 16, "lr": 0.000312345,
              "weight_decay": 1.2e-5, "unfrozen_layers": 4, **extra.pop("config", {})}  # fmt: skip
    epochs = () if der is None else ({"epoch": 1, study.metric: der, **{c: der / 3 for c in study.components}},)
    return TrialRecord(
        number=number, state=state, value=der, params={}, config=config, epochs=epochs,
        best_epoch=1 if epochs else None, **extra,
    )  # fmt: skip


def _render(rows: list[dict[str, Any]], width: int, keep: tuple[str, ...] = ()) -> str:
    out = io.StringIO()
    Console(file=out, width=width).print(rich_table(rows, title="study x: trials by DER", width=width, keep=keep))
    return out.getvalue()


@pytest.mark.parametrize("width", [100, 80, 160])
def test_table_fits_the_width_with_every_value_whole(width: int) -> None:
    trials = [_trial(0, "COMPLETE", 0.18483), _trial(1, "PRUNED", 0.25, config={"optimizer": "Adam",
              "schedule": "cosine"})]  # fmt: skip
    text = _render(sort_rows(rows_of(trials, DER_STUDY), DER_STUDY), width, keep=("trial", "state", "DER"))
    assert max(len(line) for line in text.splitlines()) <= width
    for whole in ("AdamW", "Adam ", "constant", "cosine", "0.1848", "0.25", "COMPLETE", "PRUNED", "0.0003123"):
        assert whole in text, whole
    assert "…" not in text
    if width < 110:  # three components do not fit: named in the caption, from the right
        assert "left out to fit" in text and "confusion" in text.split("left out")[1]
    else:
        assert "left out" not in text


def test_a_parameter_a_trial_does_not_use_shows_a_dash() -> None:
    study = StudyRecord(
        name="sv", objective="wavlm_sv", metric="EER", direction="minimize",
        search_space={"loss": {"choices": ["aam", "pair_bce"]},
                      "margin": {"low": 0.1, "high": 0.3, "when": {"loss": ["aam"]}}},
    )  # fmt: skip
    aam = _trial(0, "COMPLETE", 20.0, study, config={"loss": "aam", "margin": 0.2})
    bce = _trial(1, "COMPLETE", 25.0, study, config={"loss": "pair_bce", "margin": 0.2})  # the default, unused
    rows = {row["trial"]: row for row in rows_of([aam, bce], study)}
    assert rows[0]["margin"] == 0.2 and rows[1]["margin"] is None


def test_a_study_that_trains_nothing_has_no_epoch_columns_and_ranks_pruned_apart() -> None:
    study = StudyRecord(
        name="pipe", objective="pyannote_pipeline", metric="DER", direction="minimize",
        search_space={"threshold": {"low": 0.5, "high": 0.9}},
    )  # fmt: skip
    pruned = _trial(0, "PRUNED", 0.10, study, config={"threshold": 0.6})  # over the first files only
    complete = _trial(1, "COMPLETE", 0.20, study, config={"threshold": 0.7})
    rows = sort_rows(rows_of([pruned, complete], study), study)
    assert [row["trial"] for row in rows] == [1, 0]
    assert "epochs" not in rows[0] and "best_epoch" not in rows[0]


def test_a_failed_trial_that_was_retried_is_listed_apart() -> None:
    failed = _trial(0, "FAIL", 0.17)
    retry = _trial(1, "COMPLETE", 0.17, retried_from=0)
    other = _trial(2, "COMPLETE", 0.19)
    rows = sort_rows(rows_of([failed, retry, other], DER_STUDY), DER_STUDY)
    assert [(row["trial"], row["state"]) for row in rows] == [(1, "COMPLETE"), (2, "COMPLETE"), (0, "FAIL, see #1")]


def test_tables_piped_keep_to_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert stdout_console().width == 100  # pytest captures stdout: not a terminal
    monkeypatch.setenv("COLUMNS", "132")
    assert stdout_console().width == 132


def test_summaries_and_configurations_read_as_sentences() -> None:
    from tuner.text import describe

    summary = {"train": {"speakers": 20, "utterances": 80, "hours": 0.0512}, "dev": {"trials": 40, "hours": 0.02}}
    assert describe(summary) == "train: 20 speakers, 80 utterances, 0.0512 hours; dev: 40 trials, 0.02 hours"
    assert describe({"optimizer": "AdamW", "lr": 0.000312345}) == "optimizer AdamW, lr 0.0003123"


def test_separation_names_the_mixture_as_its_reference() -> None:
    from tuner.reports.summary import reference_text

    study = StudyRecord(name="sep", objective="sepformer_separation", metric="SI-SNRi", direction="maximize")
    label, text = reference_text(study, -0.72)  # type: ignore[misc]
    assert label == "reference (the mixture itself)" and text.startswith("SI-SNRi = 0 dB") and "does not beat" in text
    assert "does not beat" not in reference_text(study, 1.7)[1]  # type: ignore[index]
    assert reference_text(DER_STUDY, 0.2) is None


def test_a_trial_says_what_it_runs_when_it_starts(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from conftest import REPO

    from tuner import StudySpec, run_study

    spec = StudySpec(
        name="starts", objective="synthetic", data=None, n_trials=1, max_epochs=1,
        options={"n_train": 64, "n_val": 32, "n_features": 4, "hidden": [8, 8, 8]},
        search_space=str(REPO / "search_spaces" / "synthetic.yaml"),
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="tuner"):
        run_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}", workdir=tmp_path, show_progress=False)
    (line,) = [r.getMessage() for r in caplog.records if " starts: " in r.getMessage()]
    assert line.startswith("trial 0 starts: ") and "optimizer " in line and line.endswith(", seed 0")


def test_a_ranking_too_wide_for_its_kept_columns_wraps_its_configurations() -> None:
    rows = [
        {"rank": 1, "configuration": "optimizer=Adam lr=0.0003 schedule=constant batch_size=16 unfrozen_layers=3",
         "runs": 2, "mean": 0.1762, "sd": 0.002, "95% interval": "[0.1547, 0.1977]", "vs best": "best"},
        {"rank": 2, "configuration": "optimizer=Adam lr=0.001 schedule=constant batch_size=32 unfrozen_layers=3 "
         "(reference)", "runs": 4, "mean": 0.1832, "sd": 0.01, "95% interval": "[0.1676, 0.1988]",
         "vs best": "indistinguishable"},
    ]  # fmt: skip
    keep = ("rank", "configuration", "runs", "mean", "95% interval", "vs best")
    text = _render(rows, 80, keep=keep)
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for whole in ("0.1762", "[0.1547, 0.1977]", "indistinguishable", "batch_size=32", "(reference)"):
        assert whole in text, whole
    assert "left out to fit 80 columns: sd" in text
