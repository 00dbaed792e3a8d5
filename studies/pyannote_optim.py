"""Which optimizer, schedule, batch size, learning rate and unfrozen layers fine-tune pyannote's
segmentation model best? The question the eight hand-run settings asked, as an Optuna study (metric: validation DER)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_optim",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + PyanNet
    data="demo",  # or --data DIR (pyannote folder layout) / database.yml[:Protocol]
    pretrained=None,  # or --pretrained path/to/pytorch_model.bin (random small PyanNet if None)
    search_space="search_spaces/pyannote.yaml",
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    # a trial goes past 2 and past 4 epochs only among the best third there (the best, while fewer than 3
    # got there): only the first trial runs in full by default (a median pruner lets its first N run)
    pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    prune_on="loss/val",  # DER sits on a plateau for the first epochs, where ties never prune
    n_trials=10,  # finished (complete + pruned) trials, across all workers
    max_epochs=6,
    seed=0,
)
