"""Check a PostgreSQL multi-worker setup in a minute: 8 trials of a small synthetic regression MLP, 3 epochs
each, with 1 s of sleep per epoch standing in for GPU work (no corpus, no checkpoint, no GPU needed).

    tuner run studies/smoke_test.py --storage postgresql://user:password@db-host:5432/tuner   # on each machine

With N workers the 8 trials should finish about N times sooner than with one; `tuner studies --storage ...`
then shows one study with every trial complete. Every trial trains for real and is recorded per epoch.
"""

from tuner import StudySpec

study = StudySpec(
    name="smoke_test",
    objective="synthetic",  # tuner.objectives.synthetic: an MLP on a fixed, seeded regression problem
    data=None,  # the problem is generated (options n_train, n_val, n_features, noise, data_seed)
    search_space="search_spaces/synthetic.yaml",
    options={"sleep_per_epoch": 1.0},
    n_trials=8,  # finished (complete + pruned) trials, across all workers
    max_epochs=3,
    seed=0,
)
