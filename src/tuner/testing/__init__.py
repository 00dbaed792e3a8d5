"""Helpers for tuner's tests and benchmarks (as ``optuna.testing`` is for Optuna's); the product never imports them."""
