"""After fine-tuning: which pipeline hyper-parameters diarize best with the fine-tuned segmentation model?
pyannote.audio's SpeakerDiarization pipeline tuned on the development files (metric: DER over the files, each
file's DER reported as the trial goes so that the Wilcoxon pruner stops trials worse on the same files)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_pipeline",
    objective="pyannote_pipeline",  # pyannote.audio SpeakerDiarization, built from local parts
    data="demo",  # the demo's unseen speakers, 12 dev + 8 test files; or --data DIR / database.yml[:Protocol]
    # the best trial of the fine-tuning study in the same store; segmentation-3.0 until that study has one
    pretrained="study:pyannote_optim",
    options={
        "segmentation_fallback": "segmentation-3.0",
        "embedding": "campplus",  # CAM++ (Apache-2.0) from the package registry; or a local pyannote checkpoint
        "segmentation_step": 0.5,  # windows every 5 s (pyannote's 0.1 costs 5x the embeddings: fine on a GPU)
    },
    search_space="search_spaces/pyannote_pipeline.yaml",
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10),
    pruner=optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=4),
    n_trials=60,  # a trial costs well under a second once the first has cached segmentations and embeddings
    seed=0,
)
