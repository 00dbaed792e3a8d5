"""benchmarks/gpu_check.sh, the GPU check run in one go on a lent machine: it parses, every flag it passes exists
in the command it passes it to, its study files load, and its summary says which steps passed. Seconds, no
training (the CPU dry run is `bash benchmarks/gpu_check.sh --cpu`, minutes)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _helper():
    spec = importlib.util.spec_from_file_location("gpu_check_helper", REPO / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logical_lines() -> list[str]:
    """The script's lines with backslash continuations and arrays written over several lines joined, comments
    dropped."""
    text = re.sub(r"\\\n\s*", " ", SCRIPT.read_text())
    lines: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        line = line.split(" #")[0].strip()
        if lines and lines[-1].count("(") > lines[-1].count(")"):  # an array still open
            lines[-1] += " " + line
        else:
            lines.append(line)
    return lines


def _flags_by_command() -> dict[str, set[str]]:
    """Every long flag the script writes, by the command it goes to: tuner's verbs, the two benchmarks and the
    helper's subcommands (arrays included: a flag in OVERHEAD_ARGS goes to overhead.py)."""
    arrays = {
        "OVERHEAD_ARGS": "overhead.py",
        "SCALE_ARGS": "data_scale.py",
        "local flags": "tuner run",
        "FACTS_FLAGS": "helper facts",
        "scratch": "helper study",
        "roots": "helper pretrained",
    }
    found: dict[str, set[str]] = {}
    for line in _logical_lines():
        if "nvidia-smi" in line or line.startswith(("sed", "cp", "tail")):
            continue
        target = None
        for array, command in arrays.items():
            if re.search(rf"(^|[ &;]){array}\+?=\(", line):
                target = command
        if target is None:
            if "benchmarks/overhead.py" in line:
                target = "overhead.py"
            elif "benchmarks/data_scale.py" in line:
                target = "data_scale.py"
            elif match := re.search(r'"\$HELPER" (\w+)', line):
                target = f"helper {match.group(1)}"
                line = line.split(" -- run ")[0]  # after `tuner --peak FILE --`: tuner's own arguments
            elif match := re.search(r"-m tuner ([\w-]+)", line):
                target = f"tuner {match.group(1)}"
            elif re.match(r"trial \w+ \w+ ", line):
                target = "tuner run"  # the extra flags a trial passes on
        if target is not None:
            found.setdefault(target, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line))
    return found


def test_the_script_parses_and_answers_help_without_running_anything():
    bash = shutil.which("bash")
    assert bash is not None
    assert subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0
    shown = subprocess.run([bash, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "--cpu" in shown.stdout and "gpu_trials.json" in shown.stdout
    wrong = subprocess.run([bash, str(SCRIPT), "--gpu-please"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "unknown argument" in wrong.stderr
    env = {**os.environ, "PYTHON": "/nonexistent/python"}
    missing = subprocess.run([bash, str(SCRIPT), "--cpu"], capture_output=True, text=True, timeout=30, env=env)
    assert missing.returncode == 2 and "cannot import tuner and torch" in missing.stderr


def test_with_no_budget_every_step_is_skipped_recorded_and_handed_back_in_few_files(tmp_path):
    """The whole script's flow in seconds: no step has time to start, each is recorded as skipped, the exit
    status says not all passed, and $OUT gets the JSON files and one archive of logs (a lent machine hands
    back at most 8 files)."""
    bash = shutil.which("bash")
    assert bash is not None
    out, results = tmp_path / "out", tmp_path / "results"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_BUDGET": "0", "GPU_CHECK_RESULTS": str(results)}
    env["PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run([bash, str(SCRIPT), "--cpu"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cpu_check.json", "cpu_check_logs.tar.gz", "cpu_data_scale.json", "cpu_overhead.json", "cpu_trials.json"
    ]  # fmt: skip
    check = json.loads((out / "cpu_check.json").read_text())
    assert check["passed"] is False and {s["status"] for s in check["steps"]} == {"skipped"}
    assert [s["step"] for s in check["steps"]] == [
        "facts", "demo_data", "pyannote_segmentation", "wavlm_sv", "sepformer_separation", "synthetic",
        "synthetic_bf16", "pyannote_segmentation_bf16", "overhead", "data_scale",
    ]  # fmt: skip
    trials = json.loads((out / "cpu_trials.json").read_text())["trials"]
    assert {tuple(t["problems"]) for t in trials} == {("skipped: the check's time budget was spent",)}
    overhead = json.loads((out / "cpu_overhead.json").read_text())
    assert overhead["gpu_check"]["why"] == "skipped: the check's time budget was spent"
    assert not list(results.glob("gpu_*")), "a CPU run never writes the GPU's file names"


def test_every_flag_the_script_passes_exists_where_it_goes():
    from tuner.cli import cli

    found = _flags_by_command()
    assert {"tuner run", "tuner demo-data", "overhead.py", "data_scale.py", "helper trial", "helper finish"} <= set(
        found
    )
    assert {"--device", "--precision", "--accumulate-grad-batches", "--workdir", "--storage", "--max-epochs"} <= found[
        "tuner run"
    ]
    assert {"--output", "--device"} <= found["overhead.py"] and {"--output", "--pretrained"} <= found["data_scale.py"]
    parser = _helper().build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command, flags in found.items():
        if command.startswith("tuner "):
            shown = CliRunner().invoke(cli, [*command.split()[1:], "--help"])
            assert shown.exit_code == 0, shown.output
            known = set(re.findall(r"--[a-z][a-z0-9-]*", shown.output))
        elif command.startswith("helper "):
            known = {o for a in subparsers[command.split()[1]]._actions for o in a.option_strings}
        else:
            source = (REPO / "benchmarks" / command).read_text()
            known = set(re.findall(r'add_argument\(\s*"(--[a-z][a-z0-9-]*)"', source))
        assert flags <= known, f"{command}: {sorted(flags - known)} not among its options"


@pytest.mark.parametrize("objective", ["pyannote_segmentation", "wavlm_sv", "sepformer_separation", "synthetic"])
def test_the_study_files_it_writes_load_with_one_trial_and_no_confirmation(objective, tmp_path):
    from tuner import load_study_file

    helper = _helper()
    path = tmp_path / f"{objective}.py"
    path.write_text(helper.study_file(objective, f"gpu_check_{objective}", scratch=False))
    spec = load_study_file(path)
    assert (spec.name, spec.n_trials, spec.confirm, spec.objective) == (f"gpu_check_{objective}", 1, None, objective)
    if objective == "synthetic":
        assert spec.options["sleep_per_epoch"] == 0.0
    if objective == "pyannote_segmentation":
        assert spec.pretrained == "segmentation-3.0"
        path.write_text(helper.study_file(objective, "scratch", scratch=True))
        scratch = load_study_file(path)
        assert scratch.pretrained is None and str(scratch.search_space).endswith("pyannote_scratch.yaml")
        scratch.load_search_space()  # pyannote's default (the warm start) fits the scratch space


def test_the_summary_fails_a_step_whose_trial_failed_and_records_a_benchmark_that_wrote_nothing(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    (work / "logs").mkdir(parents=True)
    results.mkdir()
    (work / "facts.json").write_text(json.dumps({"cuda_available": True}))
    (work / "steps.tsv").write_text(
        "facts\t0\t1.0\t90\tpassed\nwavlm_sv\t0\t10.0\t120\tpassed\nsynthetic\t0\t5.0\t60\tpassed\n"
        "overhead\t124\t240.0\t240\tfailed\n"
    )
    trials = [
        {"key": "wavlm_sv", "passed": False, "problems": ["trained on cpu, not cuda"], "trial": {}},
        {"key": "synthetic", "passed": True, "problems": [], "trial": {"value": 0.5, "epoch_seconds": [1.0]}},
    ]
    (work / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trials))
    (work / "logs" / "overhead.log").write_text("Traceback (most recent call last):\nRuntimeError: CUDA error\n")
    helper = REPO / "benchmarks" / "gpu_check.py"
    bench = [sys.executable, str(helper), "bench", "overhead", "--result", str(results / "gpu_overhead.json")]
    log = str(work / "logs" / "overhead.log")
    bench += ["--rc", "124", "--seconds", "240", "--cap", "240", "--mode", "gpu", "--log", log]
    assert subprocess.run(bench, capture_output=True, text=True, timeout=60).returncode == 0
    overhead = json.loads((results / "gpu_overhead.json").read_text())
    assert overhead["gpu_check"]["passed"] is False and overhead["gpu_check"]["why"] == "timed out"
    assert overhead["gpu_check"]["error"] == "RuntimeError: CUDA error"
    finish = [sys.executable, str(helper), "finish", "--results", str(results), "--work", str(work)]
    done = subprocess.run([*finish, "--mode", "gpu", "--total", "300"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    check = json.loads((results / "gpu_check.json").read_text())
    status = {s["step"]: s["status"] for s in check["steps"]}
    assert status == {"facts": "passed", "wavlm_sv": "failed", "synthetic": "passed", "overhead": "failed"}
    assert check["passed"] is False
    assert json.loads((results / "gpu_trials.json").read_text())["passed"] is False
