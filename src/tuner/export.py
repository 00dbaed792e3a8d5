"""Export of a study's best configuration as YAML, with what it was trained on."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.errors import ConfigError
from tuner.store import files
from tuner.store.connect import load_existing_study, mask_url, resolve_storage_url
from tuner.store.records import StudyRecord, TrialRecord
from tuner.text import epoch_number

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["export_best", "best_config"]


def best_config(study_name: str, storage: str | None = None) -> dict[str, Any]:
    """The best trial of ``study_name``: its parameters and its provenance, as plain data.

    The study and its best trial are read through the store's SQL engine alone (a few queries); through
    Optuna's storage, whose errors a user gets, when that fails or finds no such study."""
    url = resolve_storage_url(storage)
    found = _read_best(study_name, url)
    if found is None:
        study = load_existing_study(study_name, url)
        try:
            best = study.best_trial
        except ValueError:
            best = None
        found = StudyRecord.of(study), best
    record, best = found
    confirmed = _confirmed_choice(study_name, url)
    if confirmed is not None:  # the configuration of best confirmed mean, through its search run
        record, best, confirmation = confirmed
    if best is None:
        raise ConfigError(f"study '{study_name}' has no completed trial yet: run `tuner run` until one completes.")
    trial = TrialRecord.of(best, record)
    accumulation = trial.accumulate_grad_batches or record.accumulate_grad_batches
    batch_size = trial.config.get("batch_size")
    exported = {
        "study": study_name,
        "objective": record.objective,
        "trial": trial.number,
        "params": dict(trial.params),
        "fixed": {k: v for k, v in trial.config.items() if k not in trial.params},
        "metric": {
            "name": record.metric,
            "direction": record.direction,
            "value": trial.value,
            "epoch": epoch_number(trial.best_epoch),  # counted from 1, as the log and the tables count
            "epochs_counted_from": 1,
            "components": {k: v for k, v in trial.best.items() if k not in ("epoch", record.metric)},
            "baseline": record.baseline_value,
        },
        "trained_on": {
            "data": record.data,
            "pretrained": record.pretrained,
            "pretrained_source": dict(record.pretrained_source) if record.pretrained_source else None,
            "options": _used_options(record),
            # read from the trained model (a checkpoint's hyperparameters, or the options it was built with)
            "architecture": dict(trial.model.get("architecture") or {}) or None,
            "trainer": dict(record.trainer),
            # what the trial's Trainer ran with (the study's settings for a trial from before tuner recorded them)
            "precision": trial.precision or record.precision,
            "accumulate_grad_batches": accumulation,
            # the examples behind each optimizer step: batch_size x accumulate_grad_batches
            "effective_batch_size": batch_size * accumulation if isinstance(batch_size, int) else None,
            "max_epochs": trial.max_epochs or record.max_epochs,
            "seed": trial.seed,
            "search_space_file": record.search_space_file,
        },
        "storage": mask_url(url),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tuner_version": record.tuner_version,
    }
    if confirmed is not None:
        exported["confirmed"] = confirmation
        if str(confirmation["exported_run"]).startswith("confirm"):  # the search only ran it pruned
            exported["trial_study"] = confirmation["study"]
    return exported


def _used_options(record: StudyRecord) -> dict[str, Any]:
    """The study's options but those describing a model from scratch when a pretrained one was fine-tuned."""
    from tuner.objectives.base import objective_entry

    entry = objective_entry(record.objective)
    unused = set(entry.scratch_options) if entry is not None and record.pretrained else set()
    return {k: v for k, v in record.options.items() if k not in unused}


def _confirmed_choice(study_name: str, url: str) -> tuple[StudyRecord, FrozenTrial, dict[str, Any]] | None:
    """Where ``study_name`` has a confirmation (:mod:`tuner.confirm`): its record, the search trial of the
    configuration with the best confirmed mean, and what the confirmation says of it; None without one (the
    store is asked by SQL alone, a few milliseconds)."""
    import sqlalchemy.exc

    from tuner.confirm import EPOCH_RULE, confirmation_name, confirmed_ranking
    from tuner.store import sql
    from tuner.store.connect import open_reader

    reader = open_reader(url)
    if reader is None:
        return None
    try:
        if sql.study_id_of(reader, confirmation_name(study_name)) is None:
            return None
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    finally:
        reader.engine.dispose()
    search = load_existing_study(study_name, url)
    companion = load_existing_study(confirmation_name(study_name), url)
    ranking = confirmed_ranking(search, companion)
    top = ranking.rows[0] if ranking.rows else None
    summary = top.summary if top is not None else None
    if top is None or summary is None:
        return None
    # its search run; for a configuration the search only ran pruned, its first confirmation run
    carrier, numbers = (search, top.numbers("search")) if top.numbers("search") else (companion, top.numbers("confirm"))
    frozen = next(t for t in carrier.get_trials(deepcopy=False) if t.number == numbers[0])
    described = {
        "study": confirmation_name(study_name),
        "rule": EPOCH_RULE,
        "runs": summary.n,
        "mean": summary.mean,
        "sd": None if summary.n < 2 else summary.sd,
        "interval_95": None if summary.n < 2 else [summary.low, summary.high],
        "seeds": list(ranking.seeds),
        "versus_reference": top.versus_reference,
        "trials": list(top.sources),
        "exported_run": f"{'search' if carrier is search else 'confirm'} #{frozen.number}",
    }
    return StudyRecord.of(search), frozen, described


def _read_best(study_name: str, url: str) -> tuple[StudyRecord, FrozenTrial | None] | None:
    """The study's record and best trial (None before one completed) read with plain SQL; None to read them
    through Optuna instead (no such study, another schema, a store that cannot be reached)."""
    import sqlalchemy.exc

    from tuner.store import sql
    from tuner.store.connect import open_reader

    reader = open_reader(url)
    if reader is None:
        return None
    try:
        study_id = sql.study_id_of(reader, study_name)
        if study_id is None:
            return None
        directions = sql.study_directions(reader, study_id)
        if len(directions) != 1:
            return None
        direction = directions[0].name.lower()
        record = StudyRecord.from_attrs(study_name, sql.study_user_attrs(reader, study_id), direction)
        best = sql.ranked_trial(reader, study_id, direction == "maximize")
        return record, (sql.read_trial(reader, study_id, best[1]) if best is not None else None)
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    finally:
        reader.engine.dispose()


#: the file inside an exported folder that holds what :func:`best_config` gives
FOLDER_RECORD = "tuner_export.yaml"
#: what to do when the export cannot be written (after the folder, the reason and its free space)
_ADVICE = "Free space there, or give --out a path on a disk with room"


def _exports_folder(objective: str | None) -> bool:
    """Whether ``objective`` exports a folder a user runs (a diarization pipeline) rather than YAML alone."""
    from tuner.objectives.base import objective_entry

    entry = objective_entry(objective)
    return entry is not None and entry.exports_folder


def export_best(
    study_name: str,
    out: str | Path | None = None,
    storage: str | None = None,
    *,
    workdir: str | Path = "storage",
    artifacts: str | Path | None = None,
) -> dict[str, Any]:
    """Write the best configuration of ``study_name`` to ``out`` and return it (``exported["out"]``: where):
    a YAML file (default ``best.yaml``), or, for an objective that exports what a user runs
    (``pyannote_pipeline``), the folder ``out`` (default ``exported/STUDY``) with that in it (a
    ``Pipeline.from_pretrained`` folder) and the YAML as ``out/tuner_export.yaml``. Each file is written whole or
    not at all (:mod:`tuner.store.files`); a full or read-only disk is one :class:`~tuner.errors.ArtifactWriteError`."""
    exported = best_config(study_name, storage)
    folder = _exports_folder(exported["objective"])
    out = Path(out) if out is not None else (Path("exported") / study_name if folder else Path("best.yaml"))
    header = f"# Best configuration of study '{study_name}' (written by `tuner export`).\n"
    text = header + yaml.safe_dump(exported, sort_keys=False)
    exported["out"] = str(out)  # returned, not written
    if folder:
        from tuner.evaluate import study_objective
        from tuner.store.artifacts import resolve_artifact_dir
        from tuner.store.resolver import StudyResolver

        if out.is_file():
            raise ConfigError(f"{out} is a file: study '{study_name}' exports a folder; give --out a folder path.")
        url = resolve_storage_url(storage)
        resolver = StudyResolver(url, resolve_artifact_dir(url, artifacts))
        record = StudyRecord.of(resolver.load(study_name))
        objective = study_objective(record, workdir, resolver)
        with files.atomic_folder(out, what=f"the export of study '{study_name}'", advice=_ADVICE) as staging:
            objective.export(staging, {**exported["fixed"], **exported["params"]})
            (staging / FOLDER_RECORD).write_text(text, encoding="utf-8")
        exported["folder"] = str(out)
        return exported
    with files.disk_errors(out.parent, f"the export of study '{study_name}'", _ADVICE):
        out.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(out, text, what=f"the export of study '{study_name}'", advice=_ADVICE)
    return exported
