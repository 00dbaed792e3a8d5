"""`tuner report`: markdown, CSV and one offline HTML page rebuilt from the store alone, for each objective;
--compare across studies; errors. Values are checked against the store read directly with optuna."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from statistics import NormalDist
from typing import Any

import optuna
import pytest
from browser import ARTIFACTS, dump_dom, ink_fraction, screenshot
from conftest import REPO, TINY_OPTIONS, TINY_SEP_OPTIONS, TINY_SV_OPTIONS

from tuner import StudySpec, run_study
from tuner.errors import ConfigError, TunerError
from tuner.store.connect import mask_url

OBJECTIVES = ("pyannote_segmentation", "wavlm_sv", "sepformer_separation")
NAMES = {"pyannote_segmentation": "report_dia", "wavlm_sv": "report_sv", "sepformer_separation": "report_sep"}
#: a plotly figure that rendered: its div gets the class js-plotly-plot from plotly.js
RENDERED = re.compile(r'<div[^>]*\bclass="[^"]*\bjs-plotly-plot\b')


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 after its first epoch: a real pruned trial for the report, whatever its metric."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


def _spec(objective: str, corpus: Path) -> StudySpec:
    common: dict[str, Any] = {
        "name": NAMES[objective],
        "objective": objective,
        "data": str(corpus),
        "n_trials": 2,
        "max_epochs": 2,
        "sampler": optuna.samplers.RandomSampler(seed=3),
        "trainer": {"limit_train_batches": 2},
    }
    if objective == "pyannote_segmentation":
        return StudySpec(
            **common,
            search_space=str(REPO / "search_spaces" / "pyannote_scratch.yaml"),
            fixed={"batch_size": 8},
            options=TINY_OPTIONS,
            pruner=PruneTrialOne(),
        )
    if objective == "wavlm_sv":
        return StudySpec(
            **{**common, "max_epochs": 1},
            search_space=str(REPO / "search_spaces" / "wavlm_sv.yaml"),
            fixed={"batch_size": 8},
            options=TINY_SV_OPTIONS,
            pruner=optuna.pruners.NopPruner(),
        )
    return StudySpec(
        **common,
        search_space=str(REPO / "search_spaces" / "sepformer.yaml"),
        fixed={"batch_size": 2},
        options=TINY_SEP_OPTIONS,
        pruner=optuna.pruners.NopPruner(),
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path, sv_corpus: Path, sep_corpus: Path) -> str:
    """One store holding a tiny 2-trial study of each objective: pyannote 2 epochs with trial 1 pruned after
    its first, WavLM SV 1 epoch (its DET curve), SepFormer 2 epochs (a maximized metric's best epoch)."""
    import torch

    work = tmp_path_factory.mktemp("report_store")
    url = f"sqlite:///{work / 'tuner.db'}"
    corpora = {"pyannote_segmentation": demo_corpus, "wavlm_sv": sv_corpus, "sepformer_separation": sep_corpus}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these models are tiny: one thread is as fast, and far faster on a busy machine
    try:
        for objective in OBJECTIVES:
            run_study(_spec(objective, corpora[objective]), url, workdir=work, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return url


@pytest.fixture(scope="module")
def reports(store: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    from tuner.reports.html import write_report

    out = tmp_path_factory.mktemp("reports")
    return {objective: write_report(NAMES[objective], storage=store, out_dir=out) for objective in OBJECTIVES}


def _stored(store: str, objective: str) -> optuna.Study:
    return optuna.load_study(study_name=NAMES[objective], storage=store)


def _epochs(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """The trial's per-epoch records straight from its attributes (the ``tuner:epochs`` table), in epoch order;
    for a trial built by the test in the layout before it, from its ``epoch/NNN`` user attributes."""
    if "tuner:epochs" not in trial.system_attrs:
        keys = sorted(k for k in trial.user_attrs if re.fullmatch(r"epoch/\d{3}", k))
        return [{"epoch": int(k[6:]), **trial.user_attrs[k]} for k in keys]
    table = trial.system_attrs["tuner:epochs"]
    return [{c: v for c, v in zip(table["columns"], row) if v is not None} for row in table["rows"]]


def _best(records: list[dict[str, Any]], metric: str, maximize: bool) -> dict[str, Any] | None:
    scored = [r for r in records if not math.isnan(r[metric])]
    return (max if maximize else min)(scored, key=lambda r: r[metric]) if scored else None


def _md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text`` as a list of {header: cell} rows."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def _trial_section(md: str, number: int) -> str:
    match = re.search(rf"^## Trial {number} \((\w+)\)[^\n]*\n(.*?)(?=^## |\Z)", md, flags=re.DOTALL | re.MULTILINE)
    assert match, f"no section for trial {number}"
    return match.group(0)


# ------------------------------------------------------------------------------------ md, csv, html


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_csv_matches_the_store(objective, store, reports):
    study = _stored(store, objective)
    attrs = study.user_attrs
    metric, components, maximize = attrs["metric"], attrs["components"], attrs["direction"] == "maximize"
    with reports[objective]["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(r["trial"]) for r in rows) == [t.number for t in study.trials] == [0, 1]
    for row in rows:
        trial = study.trials[int(row["trial"])]
        records = _epochs(trial)
        best = _best(records, metric, maximize)
        assert row["state"] == trial.state.name
        assert int(row["epochs"]) == len(records) and int(row["best_epoch"]) == best["epoch"] + 1  # from 1
        for name in (metric, *components):
            assert float(row[name]) == best[name], (trial.number, name)  # full precision: exact
        config = trial.user_attrs["config"]
        for name in ("optimizer", "schedule"):
            assert row[name] == config[name]
        assert (
            int(row["batch_size"]) == config["batch_size"] and int(row["unfrozen_layers"]) == config["unfrozen_layers"]
        )
        assert float(row["lr"]) == config["lr"] and float(row["weight_decay"]) == config["weight_decay"]
        for name in trial.params:  # the objective's own searched parameters are columns too
            assert row[name] != "" and (row[name] == str(trial.params[name]) or float(row[name]) == trial.params[name])
    values = [float(r[metric]) for r in rows]
    assert values == sorted(values, reverse=maximize), "best first"


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_markdown_has_the_header_and_every_epoch_of_every_trial(objective, store, reports):
    study = _stored(store, objective)
    attrs = study.user_attrs
    metric, maximize = attrs["metric"], attrs["direction"] == "maximize"
    md = reports[objective]["md"].read_text()
    header = md.split("\n## ", 1)[0]
    assert NAMES[objective] in header and objective in header and f"{metric} ({attrs['direction']})" in header
    assert attrs["data"] in header and f"tuner report {NAMES[objective]}" in header
    baseline = re.search(rf"baseline \(untrained model\): {re.escape(metric)} = (\S+)", header)
    assert baseline and float(baseline.group(1)) == pytest.approx(attrs["baseline"][metric], rel=1e-5)
    best = re.search(rf"best: trial (\d+), {re.escape(metric)} = (\S+)", header)
    assert best and int(best.group(1)) == study.best_trial.number
    assert float(best.group(2)) == pytest.approx(study.best_value, rel=1e-5)
    counts = {state: sum(t.state.name == state for t in study.trials) for state in ("COMPLETE", "PRUNED")}
    assert f"trials: 2 ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned" in header

    trial_table = _md_tables(md)[0]
    assert [int(r["trial"]) for r in trial_table] == [
        int(r["trial"]) for r in csv.DictReader(reports[objective]["csv"].open())
    ]
    for trial in study.trials:
        section = _trial_section(md, trial.number)
        config = trial.user_attrs["config"]
        assert section.startswith(
            f"## Trial {trial.number} ({trial.state.name}): {config['optimizer']}, {config['schedule']}, "
            f"batch {config['batch_size']}, lr "
        )
        (table,) = _md_tables(section)
        records = _epochs(trial)
        assert [int(r["epoch"]) for r in table] == [r["epoch"] + 1 for r in records] and records  # from 1
        best_epoch = _best(records, metric, maximize)["epoch"]
        for row, record in zip(table, records):
            columns = list(row)  # the hand-run tables' shape: epoch, loss/val, metric, components, loss/train, lr
            start = ["epoch", "loss/val", metric] if "loss/val" in record else ["epoch", metric]
            assert columns[: len(start)] == start and columns.index(metric) < columns.index(
                "loss/train"
            ) < columns.index("lr")
            for name, value in record.items():
                if name != "epoch":
                    assert float(row[name]) == pytest.approx(value, rel=1e-5, abs=1e-12), (
                        trial.number,
                        record["epoch"],
                        name,
                    )
            assert (row["best"] == "*") == (record["epoch"] == best_epoch)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_html_renders_every_figure_offline(objective, store, reports):
    from tuner.reports.figures import study_figures

    page = reports[objective]["html"]
    source = page.read_text()
    figures = study_figures(_stored(store, objective))
    assert len(figures) >= 4  # history, intermediate values, parallel coordinates, the objective's own (+ importances)
    assert not re.search(r"<script[^>]+src=[\"']?https?:", source, flags=re.IGNORECASE), "scripts must be inline"
    assert source.count("<!DOCTYPE html>") == 1 and source.count("* plotly.js v") == 1, "plotly.js embedded once"
    assert not RENDERED.search(source)  # only plotly.js running in the browser adds the class
    dom = dump_dom(page.as_uri())
    assert len(RENDERED.findall(dom)) == len(figures)
    assert dom.count('class="main-svg"') >= 2 * len(figures)
    for title in figures:
        assert title in dom
    png = screenshot(page.as_uri(), ARTIFACTS / f"report_{objective}.png")
    assert ink_fraction(png) > 0.04  # plotted lines and bars, not a page of text (about 0.015)


def test_objective_figures_show_the_stored_values(store):
    from tuner.reports.figures import study_figures

    # DER components stacked per trial at its best epoch; the pruned trial is in the intermediate values
    study = _stored(store, "pyannote_segmentation")
    figures = study_figures(study)
    der = figures["DER components at the best epoch"]
    assert der.layout.barmode == "stack"
    bars = {trace.name: dict(zip(trace.x, trace.y)) for trace in der.data if trace.type == "bar"}
    assert set(bars) == {"Confusion", "FalseAlarm", "Miss"}
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    for trial in study.trials:
        best = _best(_epochs(trial), "DER", maximize=False)
        label = f"trial {trial.number}" + ("" if trial.state.name == "COMPLETE" else f" ({trial.state.name.lower()})")
        for part in bars:
            assert bars[part][label] == best[part]
    assert bars["FalseAlarm"]["untrained model"] == study.user_attrs["baseline"]["FalseAlarm"]
    lines = {trace.name: trace for trace in figures["Intermediate values"].data}
    assert lines["trial 1 (pruned)"].line.dash == "dash" and list(lines["trial 1 (pruned)"].y) == [
        study.trials[1].intermediate_values[0]
    ]
    assert "Parameter importances" not in figures  # one completed trial: a note instead

    # EER per trial and the best trial's DET curve (probit axes) from details/best
    study = _stored(store, "wavlm_sv")
    (figure,) = [f for title, f in study_figures(study).items() if title.startswith("EER per trial")]
    eer = next(t for t in figure.data if t.type == "bar")
    assert sorted(eer.y) == sorted(_best(_epochs(t), "EER", False)["EER"] for t in study.trials)
    curve = next(t for t in figure.data if t.name and t.name.startswith(f"trial {study.best_trial.number}, epoch"))
    det = study.best_trial.user_attrs["details/best"]["det"]
    normal = NormalDist()
    assert len(curve.x) == len(det["fpr"])
    for x, y, fpr, fnr in zip(curve.x, curve.y, det["fpr"], det["fnr"]):
        assert normal.cdf(x) == pytest.approx(min(max(fpr, 1e-3), 1 - 1e-3), abs=1e-9)
        assert normal.cdf(y) == pytest.approx(min(max(fnr, 1e-3), 1 - 1e-3), abs=1e-9)

    # SI-SNRi of the untrained model beside each trial's best
    study = _stored(store, "sepformer_separation")
    figure = study_figures(study)["SI-SNRi before and after fine-tuning"]
    before, after = (t for t in figure.data if t.type == "bar")
    assert set(before.y) == {study.user_attrs["baseline"]["SI-SNRi"]}
    assert sorted(after.y, reverse=True) == list(after.y) == sorted((t.value for t in study.trials), reverse=True)


# --------------------------------------------------------------------------------- compare, errors


def test_compare_two_studies_of_one_metric(store, tmp_path):
    from tuner.reports.compare import write_comparison

    storage = optuna.storages.RDBStorage(store)
    optuna.copy_study(
        from_study_name=NAMES["pyannote_segmentation"],
        from_storage=storage,
        to_storage=storage,
        to_study_name="report_dia_copy",
    )
    rows, paths = write_comparison([NAMES["pyannote_segmentation"], "report_dia_copy"], storage=store, out_dir=tmp_path)
    study = _stored(store, "pyannote_segmentation")
    with paths["csv"].open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["study"] for r in table] == [NAMES["pyannote_segmentation"], "report_dia_copy"]
    for row in table:
        assert row["metric"] == "DER" and row["objective"] == "pyannote_segmentation"
        assert (int(row["trials"]), int(row["complete"]), int(row["pruned"])) == (2, 1, 1)
        assert float(row["best"]) == study.best_value and int(row["best_trial"]) == study.best_trial.number
        assert float(row["baseline"]) == study.user_attrs["baseline"]["DER"]
        assert f"lr={study.best_params['lr']:.6g}" in paths["md"].read_text()
    assert "report_dia_copy" in paths["md"].read_text() and rows[1]["params"] == study.best_params


def test_compare_refuses_different_metrics(store, tmp_path):
    from tuner.reports.compare import write_comparison

    with pytest.raises(TunerError) as error:
        write_comparison(
            [NAMES["pyannote_segmentation"], NAMES["sepformer_separation"]], storage=store, out_dir=tmp_path
        )
    message = str(error.value)
    assert (
        "\n" not in message and "DER" in message and "SI-SNRi" in message and NAMES["sepformer_separation"] in message
    )
    assert not (tmp_path / "compare.md").exists()


def test_unknown_study_names_the_store_and_its_studies(store, tmp_path):
    from tuner.reports.html import write_report

    with pytest.raises(ConfigError) as error:
        write_report("no_such_study", storage=store, out_dir=tmp_path)
    message = str(error.value)
    assert "no_such_study" in message and mask_url(store) in message
    assert all(name in message for name in NAMES.values())
    assert mask_url("postgresql://tuner:s3cret@db/tuner") == "postgresql://tuner:***@db/tuner"  # what the message uses


def test_a_study_without_trials_gets_a_report_saying_so(tmp_path):
    from tuner.reports.figures import study_figures
    from tuner.reports.html import write_report

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="empty", storage=url)
    study.set_user_attr("metric", "DER")
    study.set_user_attr("components", ["Confusion"])
    paths = write_report("empty", storage=url, out_dir=tmp_path / "out")
    assert "no trials yet" in paths["md"].read_text()
    assert paths["csv"].read_text().splitlines() == [
        "trial,state,optimizer,schedule,batch_size,lr,weight_decay,unfrozen_layers,epochs,best_epoch,DER,Confusion"
    ]
    assert "no trials yet" in paths["html"].read_text() and study_figures(study) == {}


def test_failed_and_running_trials_are_listed_last(tmp_path):
    from tuner.reports.html import write_report

    url = f"sqlite:///{tmp_path / 'states.db'}"
    study = optuna.create_study(study_name="states", storage=url, direction="maximize")
    for key, value in {
        "metric": "SI-SNRi",
        "direction": "maximize",
        "components": ["SDRi"],
        "objective": "sepformer_separation",
        "baseline": {"SI-SNRi": -3.0, "SDRi": -2.0},
    }.items():
        study.set_user_attr(key, value)
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for number, (state, values) in enumerate(
        [
            (optuna.trial.TrialState.COMPLETE, [1.5, 2.5]),
            (optuna.trial.TrialState.FAIL, []),
            (optuna.trial.TrialState.COMPLETE, [4.0, float("nan")]),
        ]
    ):
        records = {f"epoch/{e:03d}": {"SI-SNRi": v, "SDRi": v / 2, "lr": 1e-3} for e, v in enumerate(values)}
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=max(v for v in values if not math.isnan(v)) if values else None,
                params={"lr": 1e-3 * (number + 1)},
                distributions=distributions,
                user_attrs={"config": {"lr": 1e-3 * (number + 1), "optimizer": "Adam"}, **records},
                intermediate_values=dict(enumerate(values)),
            )
        )
    paths = write_report("states", storage=url, out_dir=tmp_path / "out")
    rows = list(csv.DictReader(paths["csv"].open(newline="")))
    assert [(r["trial"], r["state"], r["SI-SNRi"], r["best_epoch"]) for r in rows] == [
        ("2", "COMPLETE", "4.0", "1"),  # epochs counted from 1
        ("0", "COMPLETE", "2.5", "2"),
        ("1", "FAIL", "", ""),
    ]
    md = paths["md"].read_text()
    assert "_No epoch finished._" in _trial_section(md, 1) and "nan" in _trial_section(md, 2)
    assert "trials: 3 (2 complete, 0 pruned, 1 failed)" in md


# -------------------------------------------------------------------------------------------- cli


def _cli(*args: str) -> int:
    from tuner.cli import main

    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_cli_report_and_compare(store, tmp_path, capsys):
    out = tmp_path / "cli"
    assert _cli("report", NAMES["wavlm_sv"], "--storage", store, "--out", str(out)) == 0
    assert {p.name for p in out.iterdir()} == {
        f"{NAMES['wavlm_sv']}.{ext}" for ext in ("md", "csv", "epochs.csv", "html")
    }
    assert (
        f"tuner report {NAMES['wavlm_sv']} --storage {store} --out {out}"
        in (out / f"{NAMES['wavlm_sv']}.md").read_text()
    )
    assert str(out / f"{NAMES['wavlm_sv']}.html") in capsys.readouterr().out

    assert _cli("report", "--compare", NAMES["wavlm_sv"], NAMES["wavlm_sv"], "--storage", store, "--out", str(out)) == 0
    assert NAMES["wavlm_sv"] in capsys.readouterr().out and (out / "compare.csv").is_file()

    assert (
        _cli(
            "report",
            "--compare",
            NAMES["wavlm_sv"],
            NAMES["pyannote_segmentation"],
            "--storage",
            store,
            "--out",
            str(out),
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "EER" in err and "DER" in err
    assert _cli("report", "missing", "--storage", store, "--out", str(out)) == 2
    assert "no study 'missing'" in capsys.readouterr().err
