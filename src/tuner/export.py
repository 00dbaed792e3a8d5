"""Export of a study's best configuration as YAML, with what it was trained on."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ConfigError
from tuner.storage import mask_url, open_storage, resolve_storage_url

__all__ = ["export_best", "best_config"]


def best_config(study_name: str, storage: str | None = None) -> dict[str, Any]:
    """The best trial of ``study_name``: its parameters and its provenance, as plain data."""
    import optuna

    url = resolve_storage_url(storage)
    store = open_storage(url, heartbeat=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        raise ConfigError(
            f"no study '{study_name}' in {mask_url(url)}. Studies there: {', '.join(names) or 'none'}."
        ) from None
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(
            f"study '{study_name}' has no completed trial yet: run `tuner run` until one completes."
        ) from None
    attrs = study.user_attrs
    metric = attrs.get("metric", "value")
    best_epoch = best.user_attrs.get("best_epoch")
    epoch_record = best.user_attrs.get(f"epoch/{best_epoch:03d}", {}) if best_epoch is not None else {}
    config = best.user_attrs.get("config", {})
    return {
        "study": study_name,
        "objective": attrs.get("objective"),
        "trial": best.number,
        "params": dict(best.params),
        "fixed": {k: v for k, v in config.items() if k not in best.params},
        "metric": {
            "name": metric,
            "direction": attrs.get("direction", study.direction.name.lower()),
            "value": best.value,
            "epoch": best_epoch,
            "components": {k: v for k, v in epoch_record.items() if k not in (metric,)},
            "baseline": attrs.get("baseline", {}).get(metric),
        },
        "trained_on": {
            "data": attrs.get("data"),
            "pretrained": attrs.get("pretrained"),
            "options": attrs.get("options", {}),
            "trainer": attrs.get("trainer", {}),
            "max_epochs": best.user_attrs.get("max_epochs", attrs.get("max_epochs")),
            "seed": best.user_attrs.get("seed"),
            "search_space_file": attrs.get("search_space_file"),
        },
        "storage": mask_url(url),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tuner_version": attrs.get("tuner_version"),
    }


def export_best(study_name: str, out: str | Path, storage: str | None = None) -> dict[str, Any]:
    """Write the best configuration of ``study_name`` to ``out`` (YAML) and return it."""
    exported = best_config(study_name, storage)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Best configuration of study '{study_name}' (written by `tuner export`).\n"
    out.write_text(header + yaml.safe_dump(exported, sort_keys=False), encoding="utf-8")
    return exported
