"""What every benchmark shares: the machine it ran on and the result file it writes.

Each benchmark prints its figure and writes ``benchmarks/results/<name>.json`` with at least
``figure``, ``target``, ``meets_target``, ``command`` and ``machine`` (see :func:`write_result`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One line: architecture, CPU cores, GPU (or none) and torch version."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def command() -> str:
    """The command line that ran this benchmark, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def write_result(
    name: str,
    figure: float,
    target: float | None,
    meets_target: bool,
    unit: str,
    path: str | Path | None = None,
    **details: Any,
) -> dict[str, Any]:
    """Print the result and write it to ``path`` (default ``benchmarks/results/<name>.json``, the committed
    figure; a benchmark's ``--output`` writes elsewhere, e.g. a GPU run's); returns what was written."""
    result = {
        "name": name,
        "figure": figure,
        "unit": unit,
        "target": target,
        "meets_target": bool(meets_target),
        **details,
        "command": command(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    verdict = (
        "a measurement, no target" if target is None else f"target {target}: {'met' if meets_target else 'NOT met'}"
    )
    print(f"{name}: {figure} {unit} ({verdict}) -> {path}")
    return result
