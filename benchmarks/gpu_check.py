"""The Python parts of benchmarks/gpu_check.sh: facts about the machine, the one-trial study files, a `tuner`
run that records its peak CUDA memory, and the JSON files the check writes.

    .venv/bin/python benchmarks/gpu_check.py facts --out FILE
    .venv/bin/python benchmarks/gpu_check.py pretrained --into WORKDIR/pretrained
    .venv/bin/python benchmarks/gpu_check.py study OBJECTIVE --name NAME --out FILE [--scratch]
    .venv/bin/python benchmarks/gpu_check.py tuner --peak FILE -- run STUDY_FILE --device cuda ...
    .venv/bin/python benchmarks/gpu_check.py trial KEY --storage URL --study NAME ... >> trials.jsonl
    .venv/bin/python benchmarks/gpu_check.py bench NAME --result FILE --rc N --seconds S ...
    .venv/bin/python benchmarks/gpu_check.py finish --results DIR --work WORKDIR --mode gpu|cpu

Every subcommand but ``tuner`` imports neither torch nor tuner at the top, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: the objectives the check runs: the committed study file each is derived from (one trial, no confirmation)
#: and what it changes there
OBJECTIVES: dict[str, dict[str, Any]] = {
    "pyannote_segmentation": {"study": "studies/pyannote_optim.py"},
    "wavlm_sv": {"study": "studies/wavlm_hindi_sv.py"},  # the study's small random WavLM (pretrained=None)
    "sepformer_separation": {"study": "studies/sepformer_librimix.py"},  # a small random SepFormer
    "synthetic": {"study": "studies/smoke_test.py", "options": {"sleep_per_epoch": 0.0}},  # no stand-in sleep
}
#: without segmentation-3.0 (no package index to fetch it from): PyanNet from random weights, in its wider space
SCRATCH = {"pretrained": None, "search_space": "search_spaces/pyannote_scratch.yaml"}
SEGMENTATION = "segmentation-3.0"
SKIPPED = 125  # gpu_check.sh's exit status for a step it did not start (no time left in its budget)


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _last_error(path: Path | None) -> str | None:
    """The log's last line that reads as an error (a traceback's last line, tuner's 'error: ...')."""
    if path is None or not path.is_file():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        text = line.strip()
        if text.startswith("error:") or (": " in text and text.split(":", 1)[0].endswith(("Error", "Exception"))):
            return text[:500]
    return None


def _read_json(path: Path | None) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def revision() -> str:
    """The commit checked (unknown where the copy has no .git), '+dirty' with uncommitted changes under src/."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError):
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
            return out.stdout.strip() if out.returncode == 0 else ""
        return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:  # a copy of the tree without its .git: the caller may say which commit it is
        return os.environ.get("GPU_CHECK_REVISION") or "unknown (no git here; GPU_CHECK_REVISION unset)"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


def facts() -> dict[str, Any]:
    """The machine: nvidia-smi's line, torch and CUDA, the device, bfloat16 support."""
    smi = shutil.which("nvidia-smi")
    nvidia_smi = "nvidia-smi not found"
    if smi:
        query = "name,driver_version,memory.total,compute_cap,power.limit"
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, check=False
        )
        nvidia_smi = (out.stdout or out.stderr).strip() or f"nvidia-smi exit status {out.returncode}"
    import torch

    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {
        "nvidia_smi": nvidia_smi,
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "device_count": torch.cuda.device_count() if cuda else 0,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "bf16_supported": bool(torch.cuda.is_bf16_supported()) if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "tuner_revision": revision(),
    }
    return out


def find_segmentation(into: Path, roots: list[Path]) -> dict[str, Any]:
    """Copy a verified segmentation-3.0 from the first of ``roots`` that has one into ``into`` (a workdir's
    pretrained folder, where studies look), so that the name resolves without the package index."""
    from tuner.pretrained import present

    for root in roots:
        for candidate in (root, root.parent):  # a folder of checkpoints, or the checkpoint's own folder
            if not candidate.is_dir():
                continue
            folder = present(SEGMENTATION, candidate)
            if folder is not None:
                target = into / SEGMENTATION
                if target.resolve() != folder.resolve():
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(folder, target)
                return {"found": True, "from": str(folder.resolve()), "path": str(target)}
    return {
        "found": False,
        "looked_in": [str(r) for r in roots],
        "why": "segmentation-3.0 is not fetched locally (tuner pretrained fetch needs the package index): the "
        "pyannote objective trains PyanNet from random weights (search_spaces/pyannote_scratch.yaml) and "
        "data_scale loads chunks for an untrained PyanNet (--pretrained none)",
    }


def study_file(objective: str, name: str, scratch: bool) -> str:
    """A study file: the committed one for ``objective`` with a one-trial budget, no confirmation, and (with
    ``scratch``) the pyannote model trained from random weights."""
    entry = OBJECTIVES[objective]
    changes: dict[str, Any] = {"name": name, "n_trials": 1, "confirm": None}
    if scratch:
        changes.update({**SCRATCH, "search_space": str(REPO / SCRATCH["search_space"])})
    lines = [
        f'"""Written by benchmarks/gpu_check.py: {entry["study"]} with one trial and no confirmation'
        + (", from random weights (no segmentation-3.0 here)" if scratch else "")
        + '."""',
        "",
        "import dataclasses",
        "",
        "from tuner import load_study_file",
        "",
        f"base = load_study_file({str(REPO / entry['study'])!r})",
    ]
    if "options" in entry:
        lines.append(f"changes = {changes!r}")
        lines.append(
            f"study = dataclasses.replace(base, options={{**base.options, **{entry['options']!r}}}, **changes)"
        )
    else:
        lines.append(f"study = dataclasses.replace(base, **{changes!r})")
    return "\n".join(lines) + "\n"


def run_tuner(argv: list[str], peak: Path | None) -> int:
    """``tuner ARGV`` in this process; then, where CUDA was used, its peak memory into ``peak`` (JSON)."""
    from tuner.cli import main

    status = 0
    try:
        main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        if peak is not None:
            record: dict[str, Any] = {"cuda_used": False}
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                mb = 1024 * 1024
                record = {
                    "cuda_used": True,
                    "max_memory_allocated_mb": round(torch.cuda.max_memory_allocated() / mb, 1),
                    "max_memory_reserved_mb": round(torch.cuda.max_memory_reserved() / mb, 1),
                }
            peak.write_text(json.dumps(record) + "\n")
    return status


def smi_peak(path: Path | None) -> float | None:
    """The largest memory.used (MiB) nvidia-smi sampled into ``path`` (one number a line), if any."""
    if path is None or not path.is_file():
        return None
    values = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            values.append(float(line.split(",")[0]))
    return max(values) if values else None


def trial_summary(args: argparse.Namespace) -> dict[str, Any]:
    """What one objective's `tuner run` did: the trial's state, value, epochs and device, from the store."""
    row: dict[str, Any] = {
        "key": args.key,
        "objective": args.objective,
        "derived_from": OBJECTIVES[args.objective]["study"],
        "command_exit_status": args.rc,
        "wall_seconds": round(args.seconds, 1),
        "timed_out": args.rc in (124, 137),
        "time_limit_seconds": args.cap,
        "expected_device": args.device,
        "flags": args.flags,
        "note": args.note or None,
    }
    problems: list[str] = []
    if args.rc == SKIPPED:
        row.update(passed=False, problems=["skipped: the check's time budget was spent"])
        return row
    if args.rc != 0:
        problems.append("timed out" if row["timed_out"] else f"tuner run exited with status {args.rc}")
    try:
        from tuner.store.connect import load_existing_study
        from tuner.store.records import StudyRecord, TrialRecord

        study = load_existing_study(args.study, args.storage)
        record = StudyRecord.of(study)
        frozen = [t for t in study.trials if t.state.name != "WAITING"]
        row["metric"] = record.metric
        row["direction"] = record.direction
        row["baseline"] = {"label": record.baseline_label, **dict(record.baseline)}
        row["pretrained"] = dict(record.pretrained_source) if record.pretrained_source else None
        row["study_precision"] = record.precision
        if not frozen:
            problems.append("no trial in the store")
        else:
            last = frozen[-1]
            trial = TrialRecord.of(last, record)
            row["trial"] = {
                "number": trial.number,
                "state": trial.state,
                "value": trial.value,
                "best_epoch": trial.best_epoch,
                "epochs_run": len(trial.epochs),
                "epoch_seconds": [e.get("seconds") for e in trial.epochs],
                "trial_seconds": round((last.datetime_complete - last.datetime_start).total_seconds(), 2)
                if last.datetime_complete and last.datetime_start
                else None,
                "fit_seconds": trial.seconds,
                "config": dict(trial.config),
                "seed": trial.seed,
                "fail_reason": trial.fail_reason,
            }
            model = dict(trial.model)
            row["device"] = model.get("device")
            row["precision"] = model.get("precision")
            row["accumulate_grad_batches"] = model.get("accumulate_grad_batches")
            row["parameters"] = model.get("parameters")
            row["trainable_parameters"] = model.get("trainable_parameters")
            if trial.state != "COMPLETE":
                problems.append(
                    f"trial {trial.number} is {trial.state}" + (f": {trial.fail_reason}" if trial.fail_reason else "")
                )
            elif trial.value is None or not math.isfinite(trial.value):
                problems.append(f"trial value {trial.value} is not a finite number")
            device = str(model.get("device") or "")
            if trial.state == "COMPLETE" and not device.startswith(args.device):
                problems.append(f"trained on {device or 'an unrecorded device'}, not {args.device}")
    except Exception as error:  # the store is missing or unreadable: the run failed before it wrote one
        problems.append(f"store not readable: {type(error).__name__}: {error}")
    peak = _read_json(args.peak)
    row["peak_cuda_memory"] = peak
    row["gpu_memory_used_peak_mib"] = smi_peak(args.smi)  # the whole device, CUDA context included
    row["log"] = args.log.name if args.log else None
    row["passed"] = not problems
    row["problems"] = problems
    if problems:
        row["error"] = _last_error(args.log)
        row["log_tail"] = _tail(args.log)
    return row


def bench_result(args: argparse.Namespace) -> dict[str, Any]:
    """A benchmark's own result file with how the check ran it added; a failure record where it wrote none."""
    check = {
        "exit_status": args.rc,
        "wall_seconds": round(args.seconds, 1),
        "timed_out": args.rc in (124, 137),
        "time_limit_seconds": args.cap,
        "mode": args.mode,
        "note": args.note or None,
        "log": args.log.name if args.log else None,
    }
    written = _read_json(args.result) if args.rc == 0 else None
    if isinstance(written, dict):
        result = {**written, "gpu_check": {**check, "passed": True}}
    else:
        why = "timed out" if check["timed_out"] else f"exit status {args.rc}"
        if args.rc == SKIPPED:
            why = "skipped: the check's time budget was spent"
        elif args.rc == 0:
            why = f"no result in {args.result}"
        result = {
            "name": args.name,
            "figure": None,
            "gpu_check": {
                **check,
                "passed": False,
                "why": why,
                "error": _last_error(args.log),
                "log_tail": _tail(args.log, 40),
            },
            "date": time.strftime("%Y-%m-%d"),
        }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    return result


def finish(args: argparse.Namespace) -> int:
    """gpu_trials.json and gpu_check.json from what the steps left in the work folder; a table; 0 if all passed."""
    work, results = args.work, args.results
    facts_ = _read_json(work / "facts.json") or {
        "why": "the facts step wrote nothing",
        "log_tail": _tail(work / "logs" / "facts.log"),
    }
    pretrained = _read_json(work / "pretrained.json")
    trials = []
    if (work / "trials.jsonl").is_file():
        trials = [json.loads(line) for line in (work / "trials.jsonl").read_text().splitlines() if line.strip()]
    steps = []
    if (work / "steps.tsv").is_file():
        for line in (work / "steps.tsv").read_text().splitlines():
            name, rc, seconds, cap, status = line.split("\t")
            steps.append(
                {
                    "step": name,
                    "exit_status": int(rc),
                    "seconds": float(seconds),
                    "time_limit_seconds": int(cap),
                    "status": status,
                }
            )
    trial_ok = {t["key"]: t["passed"] for t in trials}
    for step in steps:  # a trial step passes when its trial does (a run that exits 0 with a failed trial fails)
        if step["step"] in trial_ok and step["status"] == "passed" and not trial_ok[step["step"]]:
            step["status"] = "failed"
    for name in ("overhead", "data_scale"):
        written = _read_json(results / f"{args.prefix}{name}.json")
        for step in steps:
            if (
                step["step"] == name
                and step["status"] == "passed"
                and not (written or {}).get("gpu_check", {}).get("passed")
            ):
                step["status"] = "failed"
    passed = bool(steps) and all(s["status"] == "passed" for s in steps)
    common = {
        "mode": args.mode,
        "date": time.strftime("%Y-%m-%d"),
        "command": "bash benchmarks/gpu_check.sh" + (" --cpu" if args.mode == "cpu" else ""),
        "facts": facts_,
    }
    (results / f"{args.prefix}trials.json").write_text(
        json.dumps(
            {
                "name": f"{args.prefix}trials",
                **common,
                "pretrained": pretrained,
                "passed": all(trial_ok.values()) and bool(trials),
                "trials": trials,
            },
            indent=2,
        )
        + "\n"
    )
    (results / f"{args.prefix}check.json").write_text(
        json.dumps(
            {
                "name": f"{args.prefix}check",
                **common,
                "passed": passed,
                "total_seconds": round(args.total, 1),
                "steps": steps,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\n{'step':<34} {'status':<8} {'seconds':>8} {'limit':>6}")
    for step in steps:
        print(f"{step['step']:<34} {step['status']:<8} {step['seconds']:>8.1f} {step['time_limit_seconds']:>6}")
    for trial in trials:
        t = trial.get("trial") or {}
        epochs = ", ".join(f"{s:.1f}" for s in t.get("epoch_seconds") or [] if s is not None)
        peak = (trial.get("peak_cuda_memory") or {}).get("max_memory_allocated_mb")
        print(
            f"  {trial['key']}: {trial.get('metric')} {t.get('value')} on {trial.get('device')} "
            f"({trial.get('precision')}), epochs [{epochs}] s, peak CUDA {peak} MB"
            + ("" if trial["passed"] else f"  FAILED: {'; '.join(trial['problems'])}")
        )
    print(f"{'all passed' if passed else 'NOT all passed'} in {args.total:.0f} s; results in {results}")
    return 0 if passed else 1


def build_parser() -> argparse.ArgumentParser:
    """The subcommands and their options (tests/test_gpu_check.py checks the script's flags against them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("facts", help="print the machine's facts (GPU, torch, bf16) and write them as JSON")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--require-cuda", action="store_true", help="exit 1 when torch sees no CUDA device")

    p = sub.add_parser("pretrained", help="copy a locally fetched segmentation-3.0 into a workdir's pretrained/")
    p.add_argument("--into", type=Path, required=True, help="the workdir's pretrained folder")
    p.add_argument("--from", dest="roots", type=Path, action="append", default=[], help="where to look (repeat)")
    p.add_argument("--out", type=Path, required=True, help="what was found, as JSON")

    p = sub.add_parser("study", help="write a one-trial study file derived from the objective's committed one")
    p.add_argument("objective", choices=sorted(OBJECTIVES))
    p.add_argument("--name", required=True, help="the study's name in the store")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scratch", action="store_true", help="pyannote: random weights, no segmentation-3.0")

    p = sub.add_parser("tuner", help="run `tuner ARGS` in this process and record its peak CUDA memory")
    p.add_argument("--peak", type=Path, help="JSON file for the peak CUDA memory")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- then tuner's arguments")

    p = sub.add_parser("trial", help="one objective's trial as a JSON line, read from the store")
    p.add_argument("key", help="the step's name")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--rc", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--cap", type=int, required=True)
    p.add_argument("--device", required=True, help="the device the trial must have trained on: cuda or cpu")
    p.add_argument("--flags", default="", help="the tuner run flags, as given")
    p.add_argument("--peak", type=Path)
    p.add_argument("--smi", type=Path)
    p.add_argument("--log", type=Path)
    p.add_argument("--note", default="")

    p = sub.add_parser("bench", help="add how the check ran it to a benchmark's result (or record its failure)")
    p.add_argument("name")
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--rc", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--cap", type=int, required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--log", type=Path)
    p.add_argument("--note", default="")

    p = sub.add_parser("finish", help="write <prefix>trials.json and <prefix>check.json; exit 0 if all passed")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--prefix", default="gpu_")
    p.add_argument("--total", type=float, required=True)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.command == "facts":
        found = facts()
        args.out.write_text(json.dumps(found, indent=2) + "\n")
        for key, value in found.items():
            print(f"{key}: {value}")
        if args.require_cuda and not found["cuda_available"]:
            sys.exit("torch.cuda.is_available() is False: no GPU for the check")
    elif args.command == "pretrained":
        args.into.mkdir(parents=True, exist_ok=True)
        found = find_segmentation(args.into, args.roots)
        args.out.write_text(json.dumps(found, indent=2) + "\n")
        print(
            f"segmentation-3.0 from {found['from']}" if found["found"] else f"no local segmentation-3.0: {found['why']}"
        )
    elif args.command == "study":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(study_file(args.objective, args.name, args.scratch))
    elif args.command == "tuner":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        sys.exit(run_tuner(argv, args.peak))
    elif args.command == "trial":
        print(json.dumps(trial_summary(args)))
    elif args.command == "bench":
        result = bench_result(args)
        print(f"{args.name}: {'passed' if result['gpu_check']['passed'] else 'FAILED'} -> {args.result}")
    elif args.command == "finish":
        sys.exit(finish(args))


if __name__ == "__main__":
    main()
