"""The version of tuner (recorded in every study it creates)."""

__version__ = "0.1.0"
