"""One study, one problem: what defines a study's problem, and the check that opening a stored study again (``tuner
run``, ``tuner confirm``) keeps it.

A study's trials are compared with each other: the sampler learns from them, the pruner ranks a trial against the
others at the same step, the report and the confirmation rank them. That holds only while every trial runs the
same problem. :func:`fingerprint` is what defines it; it is recorded when the study is created (study attribute
``problem``), and a study opened again is compared with it key by key before anything is written to the store.
A difference is refused (:class:`~tuner.errors.StudyChanged`) with one line per difference: the key, the stored
and the new value, and the ways out.

What defines the problem:

- ``objective`` (what is measured, in which direction);
- ``data`` as the objective resolved it (the corpus folder, ``database.yml:Protocol``);
- the pretrained checkpoint, by its SHA-256 where one is recorded (the same file under another path or name is
  the same problem; a ``study:NAME`` whose best trial has changed since is not), else by the name given;
- the objective's ``options`` as resolved (defaults filled in; an option a study's tuner did not have counts as
  its default), except the objective's ``runtime_options`` (loader workers, a test list only ``tuner evaluate``
  reads, ...);
- ``max_epochs`` (a cosine schedule's length, the pruner's steps), ``prune_on`` (what the pruner compares),
  ``accumulate_grad_batches`` (what a trial's ``batch_size`` means: an effective batch of K x batch_size) and the
  extra ``trainer`` arguments (``limit_train_batches``, ``gradient_clip_val``, ...; not those that only log:
  :data:`RUNTIME_TRAINER`); an objective that trains nothing has none of these but ``prune_on``;
- the search space, parameter by parameter: searched (its choices; its range, scale and step; its ``when``) or
  fixed (its value; a parameter the space leaves out is fixed at its default). Choices listed in another order
  are the same parameter (the study keeps its own order).

What does not, and may change from one run to the next: the budget (``n_trials``, ``--n-trials``,
``--timeout``), ``seed``, ``sampler`` and ``pruner`` (how the next trials are chosen and stopped, not what they
measure), ``warm_start`` (enqueued once per study), ``confirm``, ``description``, the device and the number of
workers, and ``precision``: workers on different GPUs may share a study, each in the precision it can train in
(each trial records its own; a change is logged).

The search space may grow where the trials already run stay points of it: with ``extend_space`` (``tuner run
--extend-space``) a range may widen (same scale and step, on the same grid), a categorical parameter may gain
choices, and a parameter the study fixed may become searched when its fixed value is among the new choices or in
the new range. The extension is recorded (study attribute ``space_extensions``: when, and each parameter's old and
new form), the study's ``search_space`` and fingerprint become the extended ones, and the distributions Optuna
keeps beside the earlier trials' values are widened to match (Optuna refuses a categorical parameter whose choices
change within a study, and leaves a parameter whose distribution differs between trials out of importances).
Narrowing a range, dropping a choice, changing a scale, a step or a condition, fixing a searched parameter, and
every other key are never extensions.

A study recorded by an older tuner has no fingerprint: it is compared on what its record holds (every key it
has), and its fingerprint is recorded on that first open.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuner._version import __version__
from tuner.errors import ConfigError, StudyChanged
from tuner.objectives.base import Objective, StepwiseObjective
from tuner.quiet import experimental
from tuner.store import records
from tuner.store.connect import mask_url
from tuner.store.queries import queries_of

if TYPE_CHECKING:
    import optuna

    from tuner.search_space import SearchSpace
    from tuner.study import StudySpec

__all__ = ["RUNTIME_TRAINER", "Difference", "Reopening", "fingerprint", "stored_problem", "differences", "reopen"]

logger = logging.getLogger(__name__)

#: ``lightning.Trainer`` arguments that change what is logged or checked, not what a trial learns
RUNTIME_TRAINER = frozenset(
    {"log_every_n_steps", "enable_model_summary", "num_sanity_val_steps", "profiler", "default_root_dir"}
)
#: a key a mapping (options, trainer) does not hold, on one side of a comparison
_UNSET = "(not set)"


def _plain(value: Any) -> Any:
    """``value`` as the store gives it back (JSON: tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def fingerprint(spec: StudySpec, objective: Objective, space: SearchSpace, prune_on: str) -> dict[str, Any]:
    """What defines the problem of ``spec`` run by ``objective`` (set up) over ``space``, as the store keeps it."""
    described = objective.describe()
    problem: dict[str, Any] = {
        "objective": objective.name,
        "data": described["data"],
        "pretrained": described["pretrained"],
        "checkpoint": records.checkpoint_digest(described["pretrained_source"]),
        "options": described["options"],
        "prune_on": prune_on,
        "search_space": space.to_dict(),
    }
    if not isinstance(objective, StepwiseObjective):
        problem["max_epochs"] = spec.max_epochs
        problem["accumulate_grad_batches"] = spec.accumulate_grad_batches
        problem["trainer"] = dict(spec.trainer)
    return dict(_plain(problem))


def stored_problem(record: records.StudyRecord) -> dict[str, Any]:
    """The fingerprint ``record``'s study was created with; for a study from an older tuner, what its record holds
    of it (only the keys it holds: the others are not compared)."""
    if record.problem is not None:
        return dict(record.problem)
    held = record.stored_keys
    problem: dict[str, Any] = {
        "objective": record.objective,
        "prune_on": record.prune_on,  # as before: a study from before prune_on pruned on its metric
        "accumulate_grad_batches": record.accumulate_grad_batches,  # recorded, or what its trainer arguments gave
    }
    for key in ("data", "pretrained", "options", "max_epochs", "trainer", "search_space"):
        if key in held:
            problem[key] = getattr(record, key)
    if "pretrained_source" in held:
        problem["checkpoint"] = records.checkpoint_digest(record.pretrained_source)
    return dict(_plain(problem))


# -- differences -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One key on which a run's problem differs from the stored study's."""

    key: str  # as the message names it: ``max_epochs``, ``options['n_train']``, ``search space 'lr'``
    stored: str  # the stored value, as text
    new: str  # this run's
    note: str = ""  # what it means, or what to do
    extension: bool = False  # the new value extends the stored one (a search-space parameter only)
    param: str | None = None  # the search-space parameter, and its stored and new form (as the space's data)
    forms: tuple[Any, Any] = field(default=(None, None), compare=False)

    @property
    def line(self) -> str:
        tag = ("extension: " if self.extension else "not an extension: ") if self.param is not None else ""
        note = f" ({tag}{self.note})" if self.note or tag else ""
        return f"{self.key}: stored {self.stored}, now {self.new}{note}"


def _text(value: Any) -> str:
    return _UNSET if value is _UNSET else repr(value)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _checkpoint_text(name: Any, digest: Any) -> str:
    return repr(name) + (f" (sha256 {str(digest)[:12]})" if digest else "")


_NOTES = {
    "max_epochs": "each trial's epochs: a cosine schedule's length, the pruner's steps",
    "prune_on": "its trials' intermediate values are {stored}, which the pruner compares: set prune_on={stored}",
    "accumulate_grad_batches": (
        "its trials' batch_size means an effective batch of {stored} x batch_size: set accumulate_grad_batches="
        "{stored} (or leave out --accumulate-grad-batches)"
    ),
}


def differences(
    stored: Mapping[str, Any], current: Mapping[str, Any], objective: Objective, space: SearchSpace
) -> list[Difference]:
    """Every key on which ``current`` (a :func:`fingerprint`) differs from ``stored`` (:func:`stored_problem`), in
    the order the message lists them; a key either side lacks is not compared (an older study, an objective that
    trains nothing). ``space``: this run's, whose vocabulary gives the value of a parameter a space leaves out."""
    both = set(stored) & set(current)
    found: list[Difference] = []
    if "data" in both and stored["data"] != current["data"]:
        found.append(Difference("data", _text(stored["data"]), _text(current["data"])))
    digests = stored.get("checkpoint"), current.get("checkpoint")
    if "pretrained" in both:
        same = digests[0] == digests[1] if all(digests) else stored["pretrained"] == current["pretrained"]
        if not same:
            found.append(
                Difference(
                    "pretrained",
                    _checkpoint_text(stored["pretrained"], digests[0]),
                    _checkpoint_text(current["pretrained"], digests[1]),
                )
            )
    if "options" in both:
        found += _mapping("options", stored["options"], current["options"], objective)
    for key in ("max_epochs", "prune_on", "accumulate_grad_batches"):
        if key in both and stored[key] != current[key]:
            note = _NOTES[key].format(stored=repr(stored[key]))
            found.append(Difference(key, _text(stored[key]), _text(current[key]), note))
    if "trainer" in both:
        found += _mapping("trainer", stored["trainer"], current["trainer"], None)
    if "search_space" in both:
        defaults = {name: param.default for name, param in space.vocabulary.items()}
        found += _space(stored["search_space"], current["search_space"], defaults)
    return found


def _mapping(
    group: str, stored: Mapping[str, Any], current: Mapping[str, Any], objective: Objective | None
) -> list[Difference]:
    """The keys of ``options`` (an objective's: its defaults stand in for a key a side lacks, its runtime options
    are skipped) or ``trainer`` whose values differ."""
    defaults = _plain(dict(objective.default_options)) if objective is not None else {}
    skipped = objective.runtime_options if objective is not None else RUNTIME_TRAINER
    found = []
    for key in sorted(set(stored) | set(current)):
        if key in skipped:
            continue
        old, new = stored.get(key, defaults.get(key, _UNSET)), current.get(key, defaults.get(key, _UNSET))
        if old != new:
            found.append(Difference(f"{group}[{key!r}]", _text(old), _text(new)))
    return found


def _space(stored: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[Difference]:
    """The parameters searched or fixed otherwise, each said to extend the stored one or not."""
    old_forms = {**_plain(dict(defaults)), **stored}
    new_forms = {**_plain(dict(defaults)), **current}
    found = []
    for name in [*old_forms, *(n for n in new_forms if n not in old_forms)]:
        old, new = old_forms.get(name), new_forms.get(name)
        if old != new:
            extension, note = _extends(old, new)
            if note:  # else the same parameter (its choices in another order)
                key = f"search space {name!r}"
                found.append(Difference(key, _form(old), _form(new), note, extension, name, (old, new)))
    return found


def _searched(form: Any) -> bool:
    return isinstance(form, Mapping)


def _on_grid(delta: float, step: float) -> bool:
    steps = delta / step
    return abs(steps - round(steps)) < 1e-9


def _extends(old: Any, new: Any) -> tuple[bool, str]:
    """Whether the parameter form ``new`` extends ``old`` (every value a trial may have taken under ``old`` is in
    ``new``, which Optuna accepts in the same study), and why; ``(False, "")``: the same parameter."""
    if _searched(old) and _searched(new):
        if ("choices" in old) != ("choices" in new):
            return False, "another kind of search (choices / range)"
        if old.get("when") != new.get("when"):
            return False, "another condition 'when'"
        if "choices" in old:
            added = [c for c in new["choices"] if c not in old["choices"]]
            dropped = [c for c in old["choices"] if c not in new["choices"]]
            if dropped:
                return False, f"drops {dropped}"
            return (True, f"adds {added}") if added else (False, "")
        if bool(old.get("log")) != bool(new.get("log")):
            return False, "another scale (log)"
        if old.get("step") != new.get("step"):
            return False, "another step"
        if new["low"] > old["low"] or new["high"] < old["high"]:
            return False, "narrows the range"
        if old.get("step") and not _on_grid(old["low"] - new["low"], old["step"]):
            return False, "moves the grid of steps"
        return True, "widens the range"
    if _searched(new):
        inside = old in new["choices"] if "choices" in new else _in_range(old, new)
        if inside and not new.get("when"):
            return True, f"searches a parameter the study fixed at {old!r}, which the new space holds"
        return False, f"searches a parameter the study fixed at {old!r}, which the new space leaves out"
    if _searched(old):
        return False, "fixes a searched parameter: a narrower space"
    return False, "another fixed value"


def _in_range(value: Any, form: Mapping[str, Any]) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not form["low"] <= value <= form["high"]:
        return False
    return not form.get("step") or _on_grid(value - form["low"], form["step"])


def _form(form: Any) -> str:
    """A parameter's form in a message: ``fixed 0``, ``choices ['Adam', 'AdamW']``, ``range [0.0001, 0.03] log``."""
    if not _searched(form):
        return f"fixed {form!r}"
    if "choices" in form:
        text = f"choices {form['choices']!r}"
    else:
        text = f"range [{_number(form['low'])}, {_number(form['high'])}]"
        text += " log" if form.get("log") else ""
        text += f" step {_number(form['step'])}" if form.get("step") else ""
    when = form.get("when") or {}
    return text + "".join(f" when {other} in {values!r}" for other, values in when.items())


def _message(where: str, url: str, found: list[Difference], extend_space: bool) -> str:
    lines = [
        f"{where} in {mask_url(url)} was created for another problem: its trials cannot be compared with this "
        "run's. What differs:"
    ]
    lines += [f"  - {d.line}" for d in found]
    ways = (
        "Run this as a new study, with --study-name NAME (or in another store, --storage), or put the stored "
        "values back in the study file"
    )
    extensions = [d for d in found if d.extension]
    if extend_space and extensions:
        ways += ". --extend-space accepts only the lines marked 'extension', not the others"
    elif extend_space:
        ways += (
            ". --extend-space accepts only a wider search space (a wider range, added choices, a fixed parameter "
            "searched over values that hold it), and none of these lines is one"
        )
    elif extensions and len(extensions) == len(found):
        ways += "; or pass --extend-space to extend the study's search space with them (recorded in the study)"
    elif extensions:
        ways += "; --extend-space would accept the lines marked 'extension', not the others"
    return "\n".join([*lines, ways + "."])


# -- opening a stored study ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reopening:
    """What opening a stored study again with this run's problem does, decided before anything is written."""

    study: str
    space: SearchSpace  # what trials are asked from: this run's space, its choices in the study's order
    problem: dict[str, Any]  # the fingerprint to record
    write: bool  # whether the fingerprint is to be recorded (a study from an older tuner, or an extension)
    #: the extension: each parameter's stored and new form (empty: none), and the Optuna distribution the
    #: earlier trials' values of each parameter they hold get
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)


def reopen(
    study: optuna.Study,
    spec: StudySpec,
    objective: Objective,
    space: SearchSpace,
    prune_on: str,
    url: str,
    *,
    extend_space: bool = False,
) -> Reopening:
    """Compare the stored ``study`` (recorded by tuner) with this run's problem; raise :class:`StudyChanged` where
    they differ (beyond an extension of the search space that ``extend_space`` allows). Reads only: :func:`record`
    writes what it decided."""
    from optuna.distributions import distribution_to_json

    record = records.StudyRecord.of(study)
    if record.objective != objective.name:
        raise StudyChanged(
            f"{spec.where} in {mask_url(url)} was created for objective '{record.objective}', not "
            f"'{objective.name}': its trials measure something else. Run this as a new study, with --study-name NAME "
            "(or in another store, --storage)."
        )
    stored = stored_problem(record)
    ordered = space.keeping_order(stored.get("search_space") or {})
    current = fingerprint(spec, objective, ordered, prune_on)
    found = differences(stored, current, objective, space)
    if any(not (extend_space and d.extension) for d in found):
        raise StudyChanged(_message(spec.where, url, found, extend_space))
    if record.precision != spec.precision and not isinstance(objective, StepwiseObjective):
        logger.warning(
            "study '%s' was started with precision %s; this run trains in %s (each trial records its own)",
            spec.name, record.precision, spec.precision,
        )  # fmt: skip
    changes = {d.param: {"old": d.forms[0], "new": d.forms[1]} for d in found if d.param is not None}
    distributions = {
        name: distribution_to_json(ordered.distribution(name))
        for name, change in changes.items()
        if _searched(change["old"])  # a parameter the study fixed has no distribution stored yet
    }
    write = record.problem is None or bool(changes)
    return Reopening(study.study_name, ordered, current, write, changes, distributions)


def record(study: optuna.Study, reopening: Reopening) -> None:
    """Write what :func:`reopen` decided: the fingerprint of a study from an older tuner; an extension of the search
    space (the earlier trials' distributions widened, the extension recorded), refused while trials run."""
    if reopening.changes:
        from tuner.store.lock import study_lock

        with study_lock(study, "space"):  # workers extending it together: one does, the others find it done
            now = records.StudyRecord.of(study)
            if (now.problem or {}).get("search_space") == reopening.problem["search_space"]:
                return
            _widen_distributions(study, reopening)
            at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            extension = {"at": at, "tuner_version": __version__, "changes": reopening.changes}
            space = reopening.problem["search_space"]
            records.write_problem(study, reopening.problem, [*now.space_extensions, extension], space)
        logger.warning(
            "study '%s': search space extended (%s); recorded in its user attribute '%s'",
            reopening.study,
            "; ".join(f"{name}: {_form(c['old'])} -> {_form(c['new'])}" for name, c in reopening.changes.items()),
            records.EXTENSIONS,
        )
    elif reopening.write:
        records.write_problem(study, reopening.problem)
        logger.info(
            "study '%s' comes from a tuner that did not record what defines its problem: recorded now (user "
            "attribute '%s')",
            reopening.study,
            records.PROBLEM,
        )


def _widen_distributions(study: optuna.Study, reopening: Reopening) -> None:
    """Give the earlier trials' values of each extended parameter its new distribution, once no trial runs (a
    worker still running the old space would store its old distribution again)."""
    import optuna
    from optuna.distributions import json_to_distribution

    from tuner.store.connect import heartbeat_settings

    with experimental():
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial is not running any more
    queries = queries_of(study)
    running = queries.count_trials().get("RUNNING", 0)
    if running:
        raise ConfigError(
            f"study '{reopening.study}' has {running} running trial(s): extend its search space once no other "
            f"worker runs it (a worker that died leaves its trial running until it has sent no heartbeat for "
            f"{heartbeat_settings()[1]} s)."
        )
    for name, text in reopening.distributions.items():
        new = json_to_distribution(text)
        for stored in sorted(queries.param_distributions(name)):
            if not _within(json_to_distribution(stored), new):
                raise ConfigError(
                    f"study '{reopening.study}': its trials' parameter '{name}' was stored with {stored}, which "
                    f"{text} does not extend (choices keep their order, ranges their scale and step). Run this as a "
                    "new study, with --study-name NAME."
                )
    for name, text in reopening.distributions.items():
        queries.set_param_distribution(name, text)


def _within(old: Any, new: Any) -> bool:
    """Whether Optuna distribution ``new`` holds ``old`` with every stored value meaning the same (a choice is
    stored as its position)."""
    from optuna.distributions import CategoricalDistribution

    if type(old) is not type(new):
        return False
    if isinstance(old, CategoricalDistribution):
        return list(new.choices[: len(old.choices)]) == list(old.choices)
    return old.log == new.log and old.step == new.step and new.low <= old.low and old.high <= new.high
