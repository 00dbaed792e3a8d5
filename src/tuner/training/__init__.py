"""Training machinery shared by every objective: optimisation, freezing, trial reporting, progress."""
