"""Large studies without training, for tests and benchmarks: trials recorded by tuner's own record writers.

:func:`build_study` fills a store with a diarization study of ``n_trials`` finished trials shaped like a real
one (six searched parameters; most trials pruned after 2-4 epochs, the rest run to ``max_epochs``; the
per-epoch records, configuration, seed, model and timings a worker writes; ``loss/val`` reported to Optuna
every epoch). Every trial attribute is written by the functions of :mod:`tuner.store.records` that a worker calls
(:func:`~tuner.store.records.start_trial`, :func:`~tuner.store.records.write_epoch`,
:func:`~tuner.store.records.finish_trial`, :func:`~tuner.store.records.fail_trial`), into a
:class:`~tuner.store.records.TrialAttrs` instead of a live trial; the finished trials are then added to the study in
batches of one transaction each (:func:`tuner.testing.store_builders.insert_trials`: what ``optuna.Study.add_trials``
stores, without its 50 ms a trial).
``layout="legacy"`` writes the per-epoch records as tuner did before the compact layout (one ``epoch/NNN``
user attribute per epoch, a dashboard note for every trial), for the compatibility tests.

::

    study = build_study("sqlite:///big.db", "big", 10_000)   # about 15 s on 2 cores
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from tuner.store import optuna_internals, records
from tuner.testing.store_builders import insert_study_system_attrs, insert_trials

if TYPE_CHECKING:
    import optuna

__all__ = ["SEARCH_SPACE", "STUDY_VALUES", "build_study", "noted_numbers", "trial_records"]

logger = logging.getLogger(__name__)

#: the searched space of the synthetic study (``search_spaces/pyannote_scratch.yaml``: six parameters)
SEARCH_SPACE: dict[str, Any] = {
    "optimizer": {"choices": ["Adam", "AdamW", "RAdam", "NAdam"]},
    "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "schedule": {"choices": ["constant", "cosine"]},
    "warmup_epochs": 0,
    "batch_size": {"choices": [16, 32, 64]},
    "unfrozen_layers": {"low": 0, "high": 3},
    "weight_decay": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
}
#: what the study records about itself (:func:`tuner.store.records.write_study`), beside the search space
STUDY_VALUES: dict[str, Any] = {
    "objective": "pyannote_segmentation",
    "data": "synthetic (tuner.testing.large_study)",
    "pretrained": None,
    "pretrained_source": None,
    "options": {},
    "metric": "DER",
    "direction": "minimize",
    "components": ["Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val"],
    "prune_on": "loss/val",
    "trainer": {},
    "seed": 0,
    "search_space_file": "inline",
    "tuner_version": "synthetic",
    "description": "A synthetic study: trials recorded without training (tuner.testing.large_study).",
}
BASELINE = {"DER": 1.25, "Confusion": 0.25, "FalseAlarm": 0.5, "Miss": 0.5, "loss/train": 0.9, "loss/val": 0.95}
_MODEL = {"parameters": 1_473_515, "trainable": 1_473_515, "device": "cpu"}
_START = _dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc).replace(tzinfo=None)


def trial_records(
    number: int, config: Mapping[str, Any], rng: random.Random, max_epochs: int, pruned_after: int | None
) -> list[dict[str, float]]:
    """The per-epoch records of one synthetic trial (``pruned_after`` epochs, else ``max_epochs``): DER and
    its components, training and validation loss falling from a configuration-dependent start towards a
    configuration-dependent floor, the epoch's learning rate and seconds."""
    lr = float(config["lr"])
    quality = abs(math.log10(lr) + 3.0) * 0.08 + 0.04 * config["unfrozen_layers"] / 3 + rng.uniform(0.0, 0.12)
    floor = 0.12 + quality
    epochs = pruned_after if pruned_after is not None else max_epochs
    out = []
    for epoch in range(epochs):
        decay = math.exp(-(epoch + 1) / (2.0 + 2.0 * rng.random()))
        der = floor + (1.1 - floor) * decay + rng.gauss(0.0, 0.01)
        confusion = der * rng.uniform(0.2, 0.4)
        false_alarm = der * rng.uniform(0.1, 0.3)
        schedule = 0.5 * (1 + math.cos(math.pi * epoch / max_epochs)) if config["schedule"] == "cosine" else 1.0
        out.append(
            {
                "DER": der,
                "Confusion": confusion,
                "FalseAlarm": false_alarm,
                "Miss": der - confusion - false_alarm,
                "loss/train": 0.2 + 0.6 * decay + rng.gauss(0.0, 0.005),
                "loss/val": 0.25 + quality + 0.6 * decay + rng.gauss(0.0, 0.005),
                "lr": lr * schedule,
                "seconds": round(rng.uniform(8.0, 20.0), 3),
            }
        )
    return out


def build_study(
    storage: str | optuna.storages.BaseStorage,
    name: str,
    n_trials: int,
    *,
    seed: int = 0,
    max_epochs: int = 10,
    pruned: float = 0.7,
    failed: float = 0.0,
    layout: Literal["compact", "legacy"] = "compact",
    dashboard: bool = True,
    batch: int = 500,
) -> optuna.Study:
    """Create study ``name`` in ``storage`` with ``n_trials`` finished trials recorded as a worker records them.

    A fraction ``pruned`` of the trials is pruned after 2, 3 or 4 epochs, a fraction ``failed`` fails after
    1-3 epochs (a NaN loss, as tuner records it), the others complete ``max_epochs`` epochs; parameters are
    drawn by a seeded random sampler from :data:`SEARCH_SPACE`. The same arguments give the same study.
    ``layout="legacy"`` writes one ``epoch/NNN`` user attribute per epoch (stores written before the compact
    per-epoch layout) instead of :func:`tuner.store.records.write_epoch`.

    With ``dashboard``, what workers leave for optuna-dashboard is written too: the trial notes (those
    :func:`tuner.reports.notes.note_wanted` picks; with the legacy layout one for every finished trial, as
    tuner wrote them then), then the study note and figures (:func:`tuner.reports.notes.publish_study`).
    """
    import optuna

    from tuner.search_space import SearchSpace
    from tuner.store.connect import open_storage

    store = open_storage(storage, heartbeat=False) if isinstance(storage, str) else storage
    space = SearchSpace.from_dict(SEARCH_SPACE, source="tuner.testing.large_study")
    study = optuna.create_study(study_name=name, storage=store, direction="minimize")
    records.name_metric(study, "DER")
    records.write_study(
        study, {**STUDY_VALUES, "max_epochs": max_epochs, "n_trials": n_trials, "search_space": space.to_dict()}
    )
    records.write_baseline(study, BASELINE)

    rng = random.Random(seed)
    # parameters as tuner's own suggest() draws them, from a seeded random sampler (in memory, no store)
    proposer = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    pending: list[optuna.trial.FrozenTrial] = []
    for number in range(n_trials):
        asked = proposer.ask()
        config = space.suggest(asked).as_dict()
        draw = rng.random()
        if draw < failed:
            state, epochs_run = optuna.trial.TrialState.FAIL, rng.randint(1, 3)
        elif draw < failed + pruned:
            state, epochs_run = optuna.trial.TrialState.PRUNED, rng.randint(2, 4)
        else:
            state, epochs_run = optuna.trial.TrialState.COMPLETE, max_epochs
        history = trial_records(number, config, rng, max_epochs, None if epochs_run == max_epochs else epochs_run)
        attrs = records.TrialAttrs()
        records.start_trial(attrs, config, seed + number, max_epochs)
        for epoch, record in enumerate(history):
            if layout == "legacy":
                attrs.set_user_attr(records.epoch_key(epoch), dict(record))
            else:
                records.write_epoch(attrs, epoch, record)
        value: float | None = None
        if state == optuna.trial.TrialState.FAIL:
            records.fail_trial(
                attrs,
                f"loss became nan in epoch {epochs_run} (batch 3, lr {config['lr']:.3g}): lower the learning rate",
            )
        else:
            best = min(range(len(history)), key=lambda e: history[e]["DER"])
            records.finish_trial(attrs, len(history), best, sum(r["seconds"] for r in history), _MODEL)
            # Optuna's value: the best epoch's metric; a pruned trial's is its last reported value
            value = history[best]["DER"] if state == optuna.trial.TrialState.COMPLETE else history[-1]["loss/val"]
        trial = optuna.trial.create_trial(
            state=state,
            value=value,
            params=dict(asked.params),
            distributions=dict(asked.distributions),
            user_attrs=attrs.user_attrs,
            system_attrs={"fixed_params": {}, **attrs.system_attrs, records.CHECKPOINT: None},
            intermediate_values={e: r["loss/val"] for e, r in enumerate(history)},
        )
        trial.datetime_start = _START + _dt.timedelta(minutes=number)
        trial.datetime_complete = trial.datetime_start + _dt.timedelta(seconds=sum(r["seconds"] for r in history))
        pending.append(trial)
        if len(pending) >= batch:
            insert_trials(study, pending)
            pending = []
    if pending:
        insert_trials(study, pending)
    if dashboard:
        _write_dashboard(study, layout)
    logger.info("built study '%s' with %d trials (%s layout)", name, n_trials, layout)
    return study


def noted_numbers(study: optuna.Study) -> list[int]:
    """The trials that have a dashboard note once workers have run every trial of the study
    (:func:`tuner.reports.notes.note_wanted` and the notes it retires): the first
    :data:`~tuner.reports.notes.NOTES_UP_TO` finished trials and the best :data:`~tuner.reports.notes.NOTED_BEST`."""
    import optuna

    from tuner.reports.notes import NOTED_BEST, NOTES_UP_TO

    trials = study.get_trials(deepcopy=False)
    first = [t.number for t in trials if t.state.is_finished() and t.number < NOTES_UP_TO]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    best = sorted(done, key=lambda t: (sign * t.value, t.number))[:NOTED_BEST]  # type: ignore[operator]
    return sorted(set(first) | {t.number for t in best})


def _write_dashboard(study: optuna.Study, layout: str) -> None:
    from tuner.reports import dashboard_internals, notes

    trials = study.get_trials(deepcopy=False)
    if layout == "legacy":  # one note per finished trial, written in one transaction
        record = records.StudyRecord.of(study)
        attrs: dict[str, Any] = {}
        for trial in trials:
            if trial.state.is_finished():
                trial_id = optuna_internals.trial_id(trial)
                body = notes._merge(notes._trial_note(records.TrialRecord.of(trial, record), record), "")
                attrs.update(dashboard_internals.first_note_attrs(trial_id, body))
        insert_study_system_attrs(study, attrs)
    else:
        for number in noted_numbers(study):
            notes.save_trial_note(study, trials[number])
    notes.publish_study(study)
