"""YAML files a person writes (search spaces, warm-start grids, exports): parse errors name file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.errors import ConfigError, TunerError

__all__ = ["parse_yaml"]


def parse_yaml(text: str, path: str | Path, error_class: type[TunerError] = ConfigError) -> Any:
    """``yaml.safe_load(text)``; a syntax error is an ``error_class`` (ConfigError unless the file is data,
    such as a corpus's database.yml) naming ``path:line``."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise error_class(f"{where}: invalid YAML: {getattr(error, 'problem', error)}.") from None
