"""Benchmark: wall time of one tuner trial against a plain Lightning fit of the same model, data and config.

In one process, on the demo diarization corpus with the settings of studies/pyannote_optim.py (objective,
model options, Trainer arguments, 6 epochs) and one fixed configuration (``--config``, default AdamW,
lr 1e-3, cosine, batch 32, weight decay 1e-4, unfrozen_layers 3, seed 0):

(a) plain: ``objective.build(config, seed)``; its ``configure_optimizers`` returns the trial's optimizer and
    per-epoch schedule after freezing the trial's layers (the runner's own ``attach_optimization``, as a
    trial's); ``lightning.Trainer(max_epochs=E, ...)``
    with the Trainer arguments runner.fit uses (no logger, no checkpointing, no progress bar, no model
    summary, no sanity validation; ``--plain-checkpointing`` turns Lightning's default ModelCheckpoint on)
    and ``.fit``. No tuner callback, no store. Timed from build to the end of ``fit``; the objective
    (corpus, waveform cache, pyannote's prepared data) is set up once and reused.
(b) tuner: ``run_study`` (the public runner: whatever it does per trial today) on a fresh temporary SQLite
    store with every searched parameter fixed to the same configuration, ``n_trials=1``. Timed as the
    trial's datetime_start..datetime_complete in the store; the whole ``run_study`` call (study creation,
    untrained baseline, trial, dashboard notes) is reported beside it. run_study is given the objective
    instance (a) uses instead of setting up its own, as a worker's trials share the one it set up: both
    runs read the same cached audio and pyannote's prepared data, so the ratio is tuner's own cost per
    trial (a worker's first trial also loads the training audio, in either way of running).

One warm-up of each first, then ``--repeats`` (default 5) interleaved rounds (the order alternates); medians.
Figure: median(b trial) / median(a). Target: <= 1.02. ``--profile`` adds a cProfile of one more (a) and
(b) and lists the functions whose own time grows most in (b).

    .venv/bin/python benchmarks/overhead.py                 # the figure (about 10 min on 2 quiet cores)
    .venv/bin/python benchmarks/overhead.py --quick         # a check: 1 epoch, 1 round
    .venv/bin/python benchmarks/overhead.py --device cuda --output benchmarks/results/gpu_overhead.json

Writes benchmarks/results/overhead.json (``--quick``: overhead_quick.json; ``--output PATH``: there instead).
``--device`` (default auto: a GPU if there is one) is where both runs train, as ``tuner run --device``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import json
import logging
import os
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from _common import write_result

from tuner import StudySpec, TrialConfig, load_study_file, run_study
from tuner.objectives.base import Objective, get_objective_class
from tuner.reports.publish import DashboardPublisher
from tuner.store.records import StudyRecord, TrialRecord

logger = logging.getLogger("benchmarks.overhead")

DEFAULT_CONFIG: dict[str, Any] = {
    "optimizer": "AdamW",
    "lr": 1e-3,
    "schedule": "cosine",
    "batch_size": 32,
    "weight_decay": 1e-4,
    "unfrozen_layers": 3,
}
QUICK = {"epochs": 1, "repeats": 1}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Library warnings off for both runs (the runner filters its own list the same way)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def plain_fit(
    objective: Objective,
    config: TrialConfig,
    seed: int,
    epochs: int,
    trainer_args: Mapping[str, Any],
    checkpoint_dir: str | None,
    device: str = "auto",
) -> tuple[float, float, dict[str, float]]:
    """(seconds, seconds in Trainer.fit, last epoch's metrics) of a plain Lightning fit: build, optimizer, fit."""
    import lightning.pytorch as pl

    from tuner.training.fit import (
        attach_optimization,  # the trial's optimizer, schedule and unfrozen layers
        device_settings,  # the accelerator and devices `tuner run --device` picks
    )

    started = time.perf_counter()
    inputs = objective.build(config, seed)
    module = inputs.module

    attach_optimization(module, objective, config, epochs)
    accelerator, devices = device_settings(device)
    with quiet():
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=devices,
            logger=False,
            enable_checkpointing=checkpoint_dir is not None,
            default_root_dir=checkpoint_dir,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            **{**inputs.trainer_options, **dict(trainer_args)},
        )
        fit_started = time.perf_counter()
        trainer.fit(
            module,
            datamodule=inputs.datamodule,
            train_dataloaders=inputs.train_dataloaders,
            val_dataloaders=inputs.val_dataloaders,
        )
    ended = time.perf_counter()
    return (
        ended - started,
        ended - fit_started,
        objective.epoch_metrics({k: float(v) for k, v in trainer.callback_metrics.items()}),
    )


def tuner_trial(spec: StudySpec, workdir: str, objective: Objective, device: str = "auto") -> dict[str, Any]:
    """One trial through run_study on a fresh temporary SQLite store: its times and last epoch's record.

    run_study uses ``objective`` (set up already) instead of setting up its own, as a worker's later
    trials use the one it set up for its first: both runs then read the same cached audio.
    """
    from unittest import mock

    import tuner.runner

    given = mock.patch.object(
        tuner.runner,
        "prepare_objective",
        lambda spec, workdir, store=None: (objective, spec.load_search_space(type(objective).params)),
    )
    with tempfile.TemporaryDirectory(prefix="tuner-overhead-") as tmp, quiet(), given:
        started = time.perf_counter()
        study = run_study(  # as `tuner run` runs it, optuna-dashboard notes included
            spec,
            f"sqlite:///{tmp}/overhead.db",
            n_trials=1,
            workdir=workdir,
            device=device,
            callbacks=[DashboardPublisher()],
        )
        total = time.perf_counter() - started
        frozen = study.trials[-1]
        trial = TrialRecord.of(frozen, StudyRecord.of(study))
        if trial.state != "COMPLETE":
            raise SystemExit(f"the tuner trial did not complete: {trial.state} {trial.fail_reason or ''}")
        return {
            "trial": (frozen.datetime_complete - frozen.datetime_start).total_seconds(),
            "run_study": total,
            "fit": trial.seconds,  # the runner's own timer around fit + recording
            "epoch_seconds": sum(e.get("seconds", 0.0) for e in trial.epochs),
            "config": dict(trial.config),
            "seed": trial.seed,
            "last_epoch": {k: v for k, v in trial.epochs[-1].items() if k != "epoch"} if trial.epochs else {},
            "device": trial.model.get("device"),
        }


def profile_pair(
    objective: Objective,
    config: TrialConfig,
    spec: StudySpec,
    trainer_args: Mapping[str, Any],
    checkpoint_dir: str | None,
    workdir: str,
    top: int,
    device: str = "auto",
) -> dict[str, Any]:
    """cProfile one plain fit and one run_study: where (b)'s extra time goes.

    Two views: tuner's and Optuna's own functions in the run_study profile by cumulative seconds (those
    that enclose the whole fit left out), and every function by how much its own seconds grow from (a) to
    (b) (noisy for torch kernels on a shared machine; large entries there are the signal).
    """

    def profiled(run: Any) -> tuple[dict[tuple[str, int, str], tuple[float, float]], float]:
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.runcall(run)
        wall = time.perf_counter() - started
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        return {key: (value[2], value[3]) for key, value in stats.items()}, wall

    plain, plain_wall = profiled(
        lambda: plain_fit(objective, config, spec.seed, spec.max_epochs, trainer_args, checkpoint_dir, device)
    )
    ours, ours_wall = profiled(lambda: tuner_trial(spec, workdir, objective, device))

    def name(key: tuple[str, int, str]) -> str:
        return f"{_short(key[0])}:{key[1]}({key[2]})"

    def own(stats: Mapping[tuple[str, int, str], tuple[float, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, (tottime, _) in stats.items():
            out[name(key)] = out.get(name(key), 0.0) + tottime
        return out

    plain_own, ours_own = own(plain), own(ours)
    grown = sorted(
        ((ours_own.get(k, 0.0) - plain_own.get(k, 0.0), k) for k in set(ours_own) | set(plain_own)), reverse=True
    )
    product = sorted(
        (
            (cumtime, name(key))
            for key, (_, cumtime) in ours.items()
            if any(part in key[0] for part in ("/tuner/", "/optuna/")) and cumtime < 0.5 * ours_wall
        ),
        reverse=True,
    )
    return {
        "plain_seconds_profiled": round(plain_wall, 2),
        "run_study_seconds_profiled": round(ours_wall, 2),
        "tuner_optuna_cumulative_seconds": [{"function": k, "seconds": round(c, 3)} for c, k in product[:top]],
        "own_seconds_grown_most": [{"function": k, "seconds": round(d, 3)} for d, k in grown[:top]],
    }


def revision() -> str:
    """The commit this ran on, with '+dirty' when src/tuner has uncommitted changes (the runner measured)."""
    import subprocess

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "src/tuner") else "")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Wall time of one tuner trial (run_study, n_trials=1, a fixed configuration) over a plain "
        "Lightning fit of the same model, data, configuration, seed and epochs, in one process (target <= 1.02).",
        epilog="Settings come from --study (objective, data, model options, Trainer arguments, max_epochs); "
        "the configuration from --config.",
    )
    parser.add_argument(
        "--study", default="studies/pyannote_optim.py", help="study file giving objective, data, options and epochs"
    )
    parser.add_argument(
        "--config",
        type=json.loads,
        default=DEFAULT_CONFIG,
        help=f"the fixed configuration, JSON (default {json.dumps(DEFAULT_CONFIG)})",
    )
    parser.add_argument("--epochs", type=int, help="epochs of both runs (default: the study's max_epochs, 6)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both runs (default 0)")
    parser.add_argument("--repeats", type=int, help="timed rounds of (a) and (b), after one warm-up (default 5)")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="epochs of the untimed warm-up runs (default 1)")
    parser.add_argument(
        "--plain-checkpointing",
        action="store_true",
        help="give the plain fit Lightning's default ModelCheckpoint (a .ckpt per epoch, in a temporary dir)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one (a) and one (b) after the timed rounds"
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions listed by --profile (default 25)")
    parser.add_argument(
        "--workdir", default="storage", help="where the demo corpus lives or is generated (default: storage)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a check, not the figure: {QUICK} (writes overhead_quick.json)"
    )
    parser.add_argument("--target", type=float, default=1.02, help="target ratio (default 1.02)")
    parser.add_argument(
        "--device",
        default="auto",
        help="where both runs train: auto (a GPU if there is one), cpu, cuda, a GPU index (default auto)",
    )
    parser.add_argument(
        "--output",
        help="result file (default benchmarks/results/overhead.json, with --quick overhead_quick.json), "
        "e.g. benchmarks/results/gpu_overhead.json so that a GPU run keeps the committed CPU figure",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    base = load_study_file(args.study)
    epochs = args.epochs or (QUICK["epochs"] if args.quick else base.max_epochs)
    repeats = args.repeats or (QUICK["repeats"] if args.quick else 5)
    spec = dataclasses.replace(
        base,
        name="overhead",
        fixed={**base.fixed, **args.config},
        n_trials=1,
        max_epochs=epochs,
        seed=args.seed,
        warm_start=None,
    )
    warmup_spec = dataclasses.replace(spec, max_epochs=args.warmup_epochs)
    space = spec.load_search_space(get_objective_class(spec.objective).params)
    if space.dimensions:
        parser.error(f"--config leaves {sorted(space.dimensions)} searched; fix every parameter of {spec.search_space}")
    config = space.config_from({})
    objective = get_objective_class(spec.objective)(spec.data, spec.pretrained, spec.options, workdir=args.workdir)
    objective.setup()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # as the runner does
    checkpoints = tempfile.TemporaryDirectory(prefix="tuner-overhead-plain-") if args.plain_checkpointing else None
    checkpoint_dir = checkpoints.name if checkpoints else None
    load = [os.getloadavg()[0]]

    logger.info("warm-up: one plain fit and one tuner trial of %d epoch(s)", args.warmup_epochs)
    plain_fit(objective, config, args.seed, args.warmup_epochs, spec.trainer, checkpoint_dir, args.device)
    tuner_trial(warmup_spec, args.workdir, objective, args.device)

    plain: list[float] = []
    plain_fit_only: list[float] = []
    trials: list[dict[str, Any]] = []
    last_plain: dict[str, float] = {}
    for round_ in range(repeats):
        order = ("plain", "tuner") if round_ % 2 == 0 else ("tuner", "plain")
        for which in order:
            if which == "plain":
                seconds, fit_only, last_plain = plain_fit(
                    objective, config, args.seed, epochs, spec.trainer, checkpoint_dir, args.device
                )
                plain.append(seconds)
                plain_fit_only.append(fit_only)
                logger.info("round %d plain fit: %.2f s", round_ + 1, seconds)
            else:
                trials.append(tuner_trial(spec, args.workdir, objective, args.device))
                logger.info(
                    "round %d tuner trial: %.2f s (run_study %.2f s)",
                    round_ + 1,
                    trials[-1]["trial"],
                    trials[-1]["run_study"],
                )
    load.append(os.getloadavg()[0])
    profile = None
    if args.profile:
        logger.info("profiling one plain fit and one run_study")
        profile = profile_pair(
            objective, config, spec, spec.trainer, checkpoint_dir, args.workdir, args.profile_top, args.device
        )
    if checkpoints is not None:
        checkpoints.cleanup()

    plain_median = statistics.median(plain)
    trial_median = statistics.median(t["trial"] for t in trials)
    figure = round(trial_median / plain_median, 4)
    metric = objective.metric
    trial_last = trials[-1]["last_epoch"]
    write_result(
        "overhead_quick" if args.quick else "overhead",
        figure,
        args.target,
        figure <= args.target,
        "tuner trial / plain fit (wall time)",
        path=args.output,
        plain_seconds=[round(s, 2) for s in plain],
        plain_trainer_fit_seconds=[round(s, 2) for s in plain_fit_only],
        trial_seconds=[round(t["trial"], 2) for t in trials],
        run_study_seconds=[round(t["run_study"], 2) for t in trials],
        runner_fit_seconds=[t["fit"] for t in trials],
        epoch_seconds_in_trial=[round(t["epoch_seconds"], 2) for t in trials],
        median_plain_seconds=round(plain_median, 2),
        median_trial_seconds=round(trial_median, 2),
        median_run_study_seconds=round(statistics.median(t["run_study"] for t in trials), 2),
        run_study_ratio=round(statistics.median(t["run_study"] for t in trials) / plain_median, 4),
        round_ratios=[round(t["trial"] / p, 4) for t, p in zip(trials, plain, strict=True)],  # the noise
        same_result={
            f"plain_last_{metric}": last_plain.get(metric),
            f"trial_last_{metric}": trial_last.get(metric),
            "trial_config": trials[-1]["config"],
            "trial_seed": trials[-1]["seed"],
        },
        settings={
            "quick": args.quick,
            "study": args.study,
            "objective": spec.objective,
            "data": objective.describe()["data"],
            "options": objective.describe()["options"],
            "config": config.as_dict(),
            "seed": args.seed,
            "epochs": epochs,
            "repeats": repeats,
            "warmup_epochs": args.warmup_epochs,
            "trainer": dict(spec.trainer),
            "plain_checkpointing": args.plain_checkpointing,
            "show_progress": "run_study default (True, as `tuner run`); silent unless stderr is a terminal",
            "device": args.device,
            "trial_device": trials[-1]["device"],
        },
        load_average_1min=[round(x, 2) for x in load],
        tuner_revision=revision(),
        profile=profile,
    )


if __name__ == "__main__":
    main()
