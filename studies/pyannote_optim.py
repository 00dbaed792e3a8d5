"""Which optimizer, schedule, batch size, learning rate and unfrozen layers fine-tune pyannote's
segmentation model best? Seed 001's question, as an Optuna study (metric: validation DER)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_optim",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + PyanNet
    data="demo",  # or --data DIR (seed 001 layout) / database.yml[:Protocol]
    pretrained=None,  # or --pretrained path/to/pytorch_model.bin (random small PyanNet if None)
    search_space="search_spaces/pyannote.yaml",
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    prune_on="loss/val",  # DER sits on a plateau for the first epochs, where ties never prune
    n_trials=10,  # finished (complete + pruned) trials, across all workers
    max_epochs=6,
    seed=0,
)
