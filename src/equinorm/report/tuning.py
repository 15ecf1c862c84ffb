"""The tuned comparison (docs/tuning.md): which value of a key (``schedule.lr``) each norm gets,
chosen on the validation split only, and what it gave on test.

A tuning study of an experiment is described by ``<results>/runs/<experiment>/tuned.json``
(written by ``python -m equinorm.launch.tune``): the key, the grid, the validation size and the
tuning seeds. Stage 1 runs are the experiment's runs whose variant is the validation split and
one grid value; a norm's pick is the value with the best median final validation accuracy over
the tuning seeds (a diverged seed counts as 0 %; ties go to the smaller value; a pick at either
end of the grid is flagged: widen the grid). Stage 2 runs are the experiment's own config at
the pick, every seed of its sweep, on the full training set, read on test as the paper does.
Only ``val_acc`` is read to choose: the test columns are not looked at (tested).

Writes ``<experiment>_tuned.{md,tex}`` (the tuned table beside the untuned one, the paired
difference against BatchNorm, each norm's value and budget) and
``<experiment>_sensitivity.{png,pdf}`` (validation accuracy against the value, the picks marked).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from equinorm import atomic
from equinorm.data.loaders import source_of
from equinorm.errors import one_line
from equinorm.experiment.identity import overrides
from equinorm.report.collect import Results
from equinorm.report.figures import (
    STYLE,
    WIDTH,
    legend_below,
    mark_all_diverged,
    save,
    tick_values,
    wrap,
)
from equinorm.report.paper import norm_color, norm_label, norm_line, norm_marker, norm_sort_key
from equinorm.report.stats import iqr, left_out, paired_values, settled
from equinorm.report.tables import BASELINE, markdown_table, tex_table
from equinorm.report.verdict import paired

STUDY_FILE = "tuned.json"
# the protocol's defaults (python -m equinorm.launch.tune; make plan counts with them)
KEY = "schedule.lr"  # the key tuned
POINTS, SPAN = 5, 4.0  # grid: 5 log-spaced values, x1/4 .. x4 of the experiment's
SEEDS = (0, 1)  # tuning seeds
VAL_FRACTION = 0.1  # validation split: this share of the training set
VAL_KEY = "dataset.val_size"
CHOICE = ["norm", "seed", "status", "value", "val_acc"]  # all that choosing reads


def tuning_val_size(cfg) -> int:
    """The validation split of stage 1: the config's ``dataset.val_size``, else VAL_FRACTION of
    the training set."""
    return cfg.dataset.val_size or round(VAL_FRACTION * source_of(cfg.dataset).train_size)


@dataclass
class Study:
    experiment: str
    key: str  # the key tuned, e.g. schedule.lr
    grid: list[str]  # its values, as run variants spell them, ascending
    val_size: int
    seeds: list[int]  # the tuning seeds of stage 1
    own: str | None  # the experiment's own value of key (its runs are the untuned ones)
    norms: list[str] = field(default_factory=list)  # those stage 1 sweeps
    base: dict = field(default_factory=dict)  # the variant of every run (the command's overrides)
    norm_items: dict = field(default_factory=dict)  # norm -> what its option adds (equi_quarter's)
    picks: dict = field(default_factory=dict)  # norm -> {value, median, edge, evidence}
    chosen: str | None = None  # the experiment= of the runs where name= names them otherwise
    final_seeds: list[str] = field(default_factory=list)  # the command's seed= (stage 2), if any

    @classmethod
    def read(cls, path: Path) -> Study:
        """The study in ``path``; a file that is not one (damaged, edited) is a ValueError
        naming it."""
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as exc:  # not JSON (a file cut short, an edit)
            raise ValueError(f"{path} is not a study's file ({one_line(exc)})") from None
        needed = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
        lacking = [k for k in needed if not isinstance(data, dict) or k not in data]
        if lacking:
            raise ValueError(f"{path} is not a study's file (it lacks {', '.join(lacking)})")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def selects(self) -> list[str]:
        """The overrides that select the study's experiment and the name its runs go under."""
        if self.chosen in (None, self.experiment):
            return [f"experiment={self.experiment}"]
        return [f"experiment={self.chosen}", f"name={self.experiment}"]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    def base_of(self, norm: str) -> dict:
        """The variant of ``norm``'s untuned runs: the command's overrides and its option's."""
        return {**self.base, **self.norm_items.get(norm, {})}

    def option_overrides(self, norm: str) -> list[str]:
        """The overrides that give ``norm`` its option's own keys (``norm.stat_fraction=0.25``)."""
        return overrides(self.norm_items.get(norm, {}))

    def tuning_variant(self, value: str, norm: str) -> dict:
        """The variant a stage-1 run of ``norm`` at ``value`` records."""
        return {**self.final_variant(value, norm), VAL_KEY: str(self.val_size)}

    def final_variant(self, value: str, norm: str) -> dict:
        """The variant of a run of ``norm`` at ``value`` on the full training set (stage 2)."""
        return {**self.base_of(norm), **({} if value == self.own else {self.key: value})}


def study_path(results_dir: str | Path, experiment: str) -> Path:
    return Path(results_dir) / "runs" / experiment / STUDY_FILE


def stage1(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The study's tuning runs (``value`` column: the grid value), complete or not."""
    values = []
    for norm, items in zip(runs["norm"], runs["items"], strict=True):
        value = items.get(study.key, study.own)
        values.append(value if items == study.tuning_variant(value, norm) else None)
    keep = runs.assign(value=values).dropna(subset=["value"])
    keep = keep[keep["value"].isin(study.grid) & keep["seed"].isin(study.seeds)]
    return keep[keep["experiment"] == study.experiment]


def evidence(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, value): median and quartiles of the final validation accuracy over the seeds
    complete or diverged (diverged: 0 %), and the counts."""
    rows = []
    data = tuning[CHOICE]  # the test columns are never read
    for (norm, value), g in data.groupby(["norm", "value"]):
        done = g[g["status"].isin(["complete", "diverged"])]
        acc = done["val_acc"].where(done["status"] == "complete", 0.0).astype(float)
        rows.append(
            {
                "norm": norm,
                "value": value,
                **iqr(acc),
                "diverged": int((done["status"] == "diverged").sum()),
                "seeds": sorted(int(s) for s in done["seed"]),
            }
        )
    return pd.DataFrame(
        rows, columns=["norm", "value", "median", "q25", "q75", "n", "diverged", "seeds"]
    )


def pick(tuning: pd.DataFrame, study: Study) -> tuple[dict, list[str]]:
    """(picks per norm, what is missing): a norm is picked only when every grid value has every
    tuning seed complete or diverged."""
    ev = evidence(tuning)
    picks, missing = {}, []
    order = {v: i for i, v in enumerate(study.grid)}
    for norm in sorted(set(tuning["norm"]) | set(study.norms), key=norm_sort_key):
        mine = ev[ev["norm"] == norm]
        lacking = [
            f"{norm} {study.key}={v} seed {s}"
            for v in study.grid
            for s in study.seeds
            if s not in next(iter(mine[mine["value"] == v]["seeds"]), [])
        ]
        if lacking:
            missing += lacking
            continue
        # medians equal in images ((290 + 294) / 2 and 292 of 300) tie: the smaller value
        best = min(mine.itertuples(), key=lambda r: (-settled(r.median), order[r.value]))
        picks[norm] = {
            "value": best.value,
            "median_val_acc": best.median,
            "edge": len(study.grid) > 1 and best.value in (study.grid[0], study.grid[-1]),
            "evidence": {
                r.value: {"median": r.median, "q25": r.q25, "q75": r.q75, "diverged": r.diverged}
                for r in mine.sort_values("value", key=lambda s: s.map(order)).itertuples()
            },
        }
    return picks, missing


def stage2(runs: pd.DataFrame, study: Study, norm: str) -> pd.DataFrame:
    """The norm's runs at its pick on the full training set (the experiment's own runs when the
    pick is the experiment's value)."""
    want = study.final_variant(study.picks[norm]["value"], norm)
    mine = runs[(runs["experiment"] == study.experiment) & (runs["norm"] == norm)]
    return mine[[items == want for items in mine["items"]]]


def _acc(frame: pd.DataFrame) -> str:
    """Test accuracy over the complete seeds, naming the seeds that are not."""
    done = frame[frame["status"] == "complete"]
    rest = "".join(f"; {seeds}" for seeds in left_out(frame["status"]))
    if done.empty:
        return ("not run" if frame.empty else "no complete run") + rest
    s = iqr(done["test_acc"])
    return f"{s['median']:.2f} ({s['q25']:.2f}-{s['q75']:.2f}), n={s['n']}{rest}"


def _versus(frame: pd.DataFrame, norm: str) -> str:
    if norm == BASELINE or BASELINE not in set(frame["norm"]):
        return "-"
    pair = paired(paired_values(frame, norm, BASELINE))
    return pair.text(None) if pair else "no seed complete for both"


def _hours(frame: pd.DataFrame) -> float:
    return frame["wall_time_s"].fillna(0).sum() / 3600


HEADER = [
    "Norm",
    "Untuned: test acc. (%) at the experiment's value",
    "Tuned value",
    "Tuned: test acc. (%)",
    "Tuned minus BatchNorm (tuned), paired: median [95% CI], Wilcoxon p",
    "Val. acc. (%) at the pick",
    "Budget: runs (tuning + final), device-hours",
]


def table(results: Results, study: Study) -> tuple[list[list[str]], list[str]]:
    """The tuned table's rows and its notes (edge picks, norms without a pick)."""
    runs = results.runs[results.runs["experiment"] == study.experiment]
    tuning = stage1(runs, study)
    pairs = zip(runs["norm"], runs["items"], strict=True)
    untuned = runs[[items == study.base_of(norm) for norm, items in pairs]]
    finals = pd.concat([stage2(runs, study, n) for n in study.picks]) if study.picks else runs[:0]
    rows, notes, unrun = [], [], []
    for norm in sorted(set(tuning["norm"]) | set(study.norms), key=norm_sort_key):
        p = study.picks.get(norm)
        mine_tuning, mine_final = tuning[tuning["norm"] == norm], finals[finals["norm"] == norm]
        mine_untuned = untuned[untuned["norm"] == norm]
        if mine_untuned.empty:
            unrun.append(norm)
        runs_used = len(mine_tuning) + len(mine_final)
        rows.append(
            [
                norm_label(norm),
                _acc(mine_untuned),
                (f"{p['value']}" + (" (grid edge)" if p["edge"] else "")) if p else "not picked",
                _acc(mine_final),
                _versus(finals, norm) if p else "-",
                f"{p['median_val_acc']:.2f}" if p else "-",
                f"{runs_used}, {_hours(pd.concat([mine_tuning, mine_final])):.2f}",
            ]
        )
        if p and p["edge"]:
            notes.append(
                f"{norm_label(norm)}'s pick {study.key}={p['value']} is at the grid's edge: the "
                "best value may lie outside it (widen the grid)."
            )
        if not p:
            notes.append(f"{norm_label(norm)}: stage 1 is not finished, no value picked.")
    if unrun:  # stage 2 trains the picks only: the experiment's own runs are its own sweep's
        notes.append(
            f"Untuned, not run: {', '.join(map(norm_label, unrun))} at the experiment's value "
            f"({'; '.join(_untuned_commands(study, unrun))}, with the study's results_dir)."
        )
    return rows, [f"Untuned: {study.key}={study.own}." if study.own else "", *notes]


def trainer_command(args: list[str]) -> str:
    """The trainer's command line with ``args``, quoted to paste into a shell."""
    return f"python -m equinorm.train {shlex.join(args)}"


def _untuned_commands(study: Study, norms: list[str]) -> list[str]:
    """The commands that train ``norms``' untuned runs: one per set of their options' items."""
    groups: dict[tuple, list[str]] = {}
    for norm in norms:
        groups.setdefault(tuple(sorted(study.base_of(norm).items())), []).append(norm)
    commands = []
    for items, names in groups.items():
        line = ["-m", *study.selects(), *overrides(dict(items)), f"norm={','.join(names)}"]
        line += study.final_seeds
        commands.append(trainer_command(line))
    return commands


def _intro(study: Study) -> str:
    seeds = ", ".join(str(s) for s in study.seeds)
    return (
        f"Each norm at its own {study.key}, picked from {{{', '.join(study.grid)}}} by the median "
        f"final validation accuracy ({study.val_size} images held out of the training set, tuning "
        f"seeds {seeds}; a diverged seed counts as 0 %, ties go to the smaller value), then "
        "trained with every seed on the full training set and read on test: median (25%-75%) "
        "over complete seeds. Device-hours: the runs' measured training time."
    )


def markdown(results: Results, study: Study) -> str:
    """The tuned table in Markdown, with its notes."""
    rows, notes = table(results, study)
    md = [f"# {study.experiment}: tuned comparison", "", _intro(study), ""]
    md += [*markdown_table(HEADER, rows), "", *[n for n in notes if n]]
    return "\n".join(md).rstrip() + "\n"


def write_tuning(results: Results, study: Study, out_dir: Path, width: float = WIDTH) -> list[Path]:
    stem = f"{study.experiment}_tuned"
    tables, figures = Path(out_dir) / "tables", Path(out_dir) / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / f"{stem}.md").write_text(markdown(results, study))
    short = ["Norm", "Untuned", "Value", "Tuned", "Minus BN, paired", "Val. acc.", "Runs, hours"]
    rows, _ = table(results, study)
    (tables / f"{stem}.tex").write_text(tex_table(_intro(study), short, [(None, rows)]))
    written = [tables / f"{stem}.md", tables / f"{stem}.tex"]
    runs = results.runs[results.runs["experiment"] == study.experiment]
    ev = evidence(stage1(runs, study))
    if not ev.empty:
        with plt.rc_context(STYLE):
            written += _sensitivity(ev, study, figures, f"{study.experiment}_sensitivity", width)
    return written


def _sensitivity(ev: pd.DataFrame, study: Study, out_dir: Path, stem: str, width: float):
    """Validation accuracy against the key per norm (median, 25%-75% band), the picks starred;
    a value at which every seed diverged is marked at the bottom, not drawn as 0 %."""
    width = min(width, 4.5)  # one panel: a column's width is enough
    fig, ax = plt.subplots(figsize=(width, 3.0))
    for norm in sorted(ev["norm"].unique(), key=norm_sort_key):
        g = ev[ev["norm"] == norm].assign(x=lambda f: f["value"].astype(float)).sort_values("x")
        lost = g["diverged"] == g["n"]
        color, ok = norm_color(norm), g[~lost]
        style = {"color": color, "ls": norm_line(norm)}
        ax.plot(
            ok["x"],
            ok["median"],
            marker=norm_marker(norm),
            label=norm_label(norm),
            **style,
        )
        ax.fill_between(ok["x"], ok["q25"], ok["q75"], color=color, alpha=0.15, lw=0)
        for x in g[lost]["x"]:
            mark_all_diverged(ax, x, color)
        p = study.picks.get(norm)
        if p and p["value"] in set(ok["value"]):
            y = float(ok[ok["value"] == p["value"]]["median"].iloc[0])
            ax.plot([float(p["value"])], [y], marker="*", ms=12, color=color, mec="black", mew=0.6)
    ax.plot([], [], marker="*", ms=9, color="0.6", mec="black", mew=0.6, ls="none", label="pick")
    ax.set_xscale("log")
    tick_values(ax, study.grid, True, width)
    ax.set_xlabel(study.key)
    ax.set_ylabel("Final validation accuracy (%)")
    shown = ev[ev["diverged"] < ev["n"]]
    if len(shown):
        top, floor = shown["q75"].max(), shown["q25"].min()
        pad = 0.08 * (top - floor) + 0.5
        ax.set_ylim(max(0.0, floor - 2 * pad), min(100.0, top + pad))
    title = (
        f"{study.experiment}: final validation accuracy vs {study.key} ({study.val_size} "
        f"held-out images, tuning seeds {', '.join(str(s) for s in study.seeds)})"
    )
    ax.set_title(wrap(title, width), loc="left")
    ax.grid(alpha=0.3)
    caption = "median over the tuning seeds (a diverged seed: 0 %); band: 25%-75%; star: the pick"
    legend_below(fig, ax, caption)
    return save(fig, out_dir, stem)


def read_study(results_dir: str | Path, experiment: str) -> Study | None:
    """The experiment's tuning study under ``results_dir``, None when it has none."""
    path = study_path(results_dir, experiment)
    return Study.read(path) if path.is_file() else None


__all__ = [
    "Study",
    "evidence",
    "pick",
    "read_study",
    "stage1",
    "stage2",
    "study_path",
    "table",
    "write_tuning",
]
