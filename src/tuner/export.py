"""Export of a study's best configuration as YAML, with what it was trained on."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ConfigError
from tuner.records import StudyRecord, TrialRecord
from tuner.storage import load_existing_study, mask_url, resolve_storage_url

__all__ = ["export_best", "best_config"]


def best_config(study_name: str, storage: str | None = None) -> dict[str, Any]:
    """The best trial of ``study_name``: its parameters and its provenance, as plain data."""
    url = resolve_storage_url(storage)
    study = load_existing_study(study_name, url)
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(
            f"study '{study_name}' has no completed trial yet: run `tuner run` until one completes."
        ) from None
    record = StudyRecord.of(study)
    trial = TrialRecord.of(best, record)
    return {
        "study": study_name,
        "objective": record.objective,
        "trial": trial.number,
        "params": dict(trial.params),
        "fixed": {k: v for k, v in trial.config.items() if k not in trial.params},
        "metric": {
            "name": record.metric,
            "direction": record.direction,
            "value": trial.value,
            "epoch": trial.best_epoch,
            "components": {k: v for k, v in trial.best.items() if k not in ("epoch", record.metric)},
            "baseline": record.baseline_value,
        },
        "trained_on": {
            "data": record.data,
            "pretrained": record.pretrained,
            "pretrained_source": dict(record.pretrained_source) if record.pretrained_source else None,
            "options": dict(record.options),
            "trainer": dict(record.trainer),
            "max_epochs": trial.max_epochs or record.max_epochs,
            "seed": trial.seed,
            "search_space_file": record.search_space_file,
        },
        "storage": mask_url(url),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tuner_version": record.tuner_version,
    }


def export_best(study_name: str, out: str | Path, storage: str | None = None) -> dict[str, Any]:
    """Write the best configuration of ``study_name`` to ``out`` (YAML) and return it."""
    exported = best_config(study_name, storage)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Best configuration of study '{study_name}' (written by `tuner export`).\n"
    out.write_text(header + yaml.safe_dump(exported, sort_keys=False), encoding="utf-8")
    return exported
