"""Headless Chromium for the tests that check what a person sees (reports, the dashboard).

`make test` installs Debian's chromium; these helpers fail loudly when it is missing rather than
skipping, so a browser test cannot pass without a browser.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

#: flags for a closed network and a root user (see the machine notes: background networking must be off)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        raise RuntimeError(
            "headless Chromium is needed for this test: `make test` installs it (apt-get install chromium)"
        )
    return path


def _run(url: str, *extra: str, budget_ms: int = 15000, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        args = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *extra, url]
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(url: str, budget_ms: int = 15000) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of virtual time."""
    result = _run(url, "--dump-dom", budget_ms=budget_ms)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"chromium could not render {url}: {result.stderr[-2000:]}")
    return result.stdout


def screenshot(url: str, out: Path, width: int = 1280, height: int = 2400, budget_ms: int = 15000) -> Path:
    """A PNG screenshot of ``url`` (kept under tests/artifacts/ by the callers)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = _run(url, f"--screenshot={out}", f"--window-size={width},{height}", budget_ms=budget_ms)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url}: {result.stderr[-2000:]}")
    return out


def ink_fraction(png: Path) -> float:
    """The fraction of pixels that are not (near) white: 0 for a blank page."""
    from PIL import Image

    image = Image.open(png).convert("L")
    pixels = image.getdata()
    return sum(1 for p in pixels if p < 240) / len(pixels)
