"""Hyper-parameter comparisons: a sweep over one key (``schedule.lr=0.2,0.1,0.05``) drawn and
tabled as final test accuracy (validation accuracy where the runs hold images out) against the
swept value, one line per norm, median and IQR over seeds -- a fair comparison of
normalizations tunes each one (paper section 6 fixes the lr per architecture; this shows what
another would have given).

The runs of one comparison are those of a (dataset, arch) whose variants
(:mod:`equinorm.experiment.identity`, as each run recorded it) are the same, the key aside: its
context. That is none for a sweep of the experiment itself (the runs whose variant is empty sit at
the experiment's value of the key), ``train.batch_size=64`` for the same sweep at another batch
size, and the protocol for the keys that set how a run is measured rather than what it trains (a
validation split, ``debug``), so a search scored on a validation split (``hparams_search=``) is
compared with itself. A key gets a comparison per context in which the finished runs (complete
or diverged) of a norm hold at least two values of it, a panel for each (dataset, arch) where one
does. A run whose variant does not name the key sits at the
value of the config it was named against (:func:`own_value`: its norm's option, its protocol),
not at the experiment file's.
Writes ``<experiment>_hparam_<key>[_<context>].{png,pdf,md,tex}`` (a long context shortened and
hashed, as run directories are).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from omegaconf import DictConfig

from equinorm import experiment as experiments
from equinorm.experiment.identity import LAYOUT_GROUPS, as_trained, file_name, value_text
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
from equinorm.report.setup import describe
from equinorm.report.stats import iqr, left_out
from equinorm.report.tables import markdown_table, tex_table
from equinorm.run.record import RunDir

ABSENT = object()  # a key the config does not have (a recorded null is "null")


def _lookup(node, key: str):
    """``key``'s value in a config (a config group: its option's ``name``), or ABSENT."""
    for part in key.split("."):
        if not isinstance(node, dict | DictConfig) or part not in node:
            return ABSENT
        node = node[part]
    return node.get("name", ABSENT) if isinstance(node, dict | DictConfig) else node


def own_value(run, key: str, protocol: tuple = ()) -> str | None:
    """``key``'s value (text as in the variants) in the run's config where its variant does not
    name it: that of the config it was named against, composed as the trainer did (a hand-edited
    config.yaml changes nothing), else -- an experiment of the user's own -- what the run's
    config.yaml recorded. None: the config has no such key."""
    names = {g: run[g] for g in LAYOUT_GROUPS}
    overrides = [f"{k}={v}" for k, v in protocol]
    node = experiments.recorded_reference(run["experiment"], names, overrides)
    if node is None:
        try:
            node = RunDir(Path(run["path"])).stored_config()
        except Exception:  # a hand-damaged config.yaml (a YAML error): no value
            node = None
    value = ABSENT if node is None else _lookup(node, key)
    return None if value is ABSENT else value_text(as_trained({key: value})[key])


PROTOCOL = {"dataset.val_size", "debug"}  # how a run is measured, not what it trains


def _context(items: dict, key: str) -> tuple[tuple[str, str], ...]:
    """The variant's items but ``key``'s: what the runs of one comparison have in common."""
    return tuple(sorted((k, v) for k, v in items.items() if k != key))


def swept(runs: pd.DataFrame) -> list[tuple[str, tuple]]:
    """(key, context) of each comparison in ``runs`` (one experiment), sorted: those with a
    (dataset, arch) that compares (:func:`comparison_runs`)."""
    found = {(k, _context(items, k)) for items in runs["items"] for k in items}
    return sorted(c for c in found if not comparison_runs(runs, *c).empty)


def comparison_runs(runs: pd.DataFrame, key: str, context: tuple = ()) -> pd.DataFrame:
    """The runs comparable along ``key`` in ``context`` ((key, value) pairs), with a ``value``
    column (text as in the variants), of each (dataset, arch) where the finished runs (complete
    or diverged; a value whose runs all failed compares nothing) of a norm hold at least two
    values: a curve. One value of another architecture's is no point of this one's; norms each
    at a value of their own (a tuned comparison's picks) compare norms, not values."""
    keep = runs[[_context(items, key) == context for items in runs["items"]]]
    protocol = tuple((k, v) for k, v in context if k in PROTOCOL)  # the rest leaves key as it is
    values = [
        run["items"][key] if key in run["items"] else own_value(run, key, protocol)
        for _, run in keep.iterrows()
    ]
    data = keep.assign(value=values).dropna(subset=["value"])
    finished = data[data["status"].isin(["complete", "diverged"])]
    counts = finished.groupby(["dataset", "arch", "norm"])["value"].nunique()
    compared = {(dataset, arch) for dataset, arch, _ in counts[counts > 1].index}
    return data.loc[[cell in compared for cell in zip(data["dataset"], data["arch"], strict=True)]]


def _order(values) -> tuple[list[str], bool]:
    """Values in plotting order and whether they are numbers."""
    try:
        nums = {v: float(v) for v in values}
    except ValueError:
        return sorted(values), False
    return sorted(values, key=nums.get), True


def metric(runs: pd.DataFrame) -> tuple[str, str]:
    """(column, words) that a comparison reads: the final validation accuracy when every complete
    run of it held images out (a search on a validation split, read as it chose), else the
    final test accuracy."""
    done = runs[runs["status"] == "complete"]
    if len(done) and "val_acc" in done and done["val_acc"].notna().all():
        return "val_acc", "final validation accuracy"
    return "test_acc", "final test accuracy"


def summary(runs: pd.DataFrame, key: str, context: tuple = ()) -> pd.DataFrame:
    """Per (dataset, arch, norm, value): the final accuracy (:func:`metric`, its words in
    ``attrs["read"]``) median/q25/q75 over complete seeds, and the seeds of each status."""
    return _summary(comparison_runs(runs, key, context), key)


def _summary(data: pd.DataFrame, key: str) -> pd.DataFrame:
    rows = []
    column, read = metric(data)
    for (dataset, arch, norm, value), g in data.groupby(["dataset", "arch", "norm", "value"]):
        done = g[g["status"] == "complete"]
        rows.append(
            {
                "dataset": dataset,
                "arch": arch,
                "norm": norm,
                "value": value,
                "own": any(key not in items for items in g["items"]),
                **iqr(done[column]),
                "complete": len(done),
                "diverged": int((g["status"] == "diverged").sum()),
                "left_out": left_out(g["status"]),
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["read"] = read
    return frame


def _cell(r) -> str:
    """Median (IQR), n over the complete seeds, naming those that are not."""
    rest = r["left_out"]
    if not r["complete"]:
        return f"- ({', '.join(rest)})" if rest else "-"
    text = f"{r['median']:.2f} ({r['q25']:.2f}-{r['q75']:.2f}), n={r['complete']}"
    return ", ".join([text, *rest])


def _table(frame: pd.DataFrame, key: str) -> tuple[list[str], list[list[str]]]:
    norms = sorted(frame["norm"].unique(), key=norm_sort_key)
    header = [key, *(norm_label(n) for n in norms)]
    rows = []
    for (dataset, arch), g in frame.groupby(["dataset", "arch"]):
        order, _ = _order(g["value"].unique())
        for value in order:
            at = g[g["value"] == value]
            own = " (experiment's)" if at["own"].any() else ""
            cells = [f"{value}{own}"]
            for norm in norms:
                r = at[at["norm"] == norm]
                cells.append(_cell(r.iloc[0]) if len(r) else "")
            rows.append([f"{dataset} / {arch}", *cells])
    return ["cell", *header], rows


def write_comparison(
    results: Results,
    experiment: str,
    key: str,
    out_dir: Path,
    width: float = WIDTH,
    context: tuple = (),
) -> list[Path]:
    runs = results.runs[results.runs["experiment"] == experiment]
    data = comparison_runs(runs, key, context)
    frame = _summary(data, key)
    if frame.empty:
        return []
    stem = file_name(f"{experiment}_hparam_{key}" + "".join(f"_{k}={v}" for k, v in context))
    against = key + (f" ({', '.join(f'{k}={v}' for k, v in context)})" if context else "")
    read = frame.attrs["read"]
    header, rows = _table(frame, key)
    md = [
        f"# {experiment}: {read} (%) against {against}",
        "",
        "Median (25%-75%) over complete seeds, n = complete seeds; the others named.",
        "",
        *markdown_table(header, rows, text_columns=2),
    ]
    tables = Path(out_dir) / "tables"
    figures = Path(out_dir) / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    (tables / f"{stem}.md").write_text("\n".join(md) + "\n")
    comment = f"{experiment}: {read} (%) against {against}, median (25%-75%)"
    (tables / f"{stem}.tex").write_text(tex_table(comment, header, [(None, rows)], 2))
    return [
        tables / f"{stem}.md",
        tables / f"{stem}.tex",
        *_figure(data, frame, (key, against, read), figures, stem, width),
    ]


def _figure(runs, frame, keys, out_dir: Path, stem: str, width: float = WIDTH) -> list[Path]:
    with plt.rc_context(STYLE):
        return _draw_figure(runs, frame, keys, out_dir, stem, width)


OWN = "the experiment's value"


def _draw_figure(runs, frame, keys, out_dir: Path, stem: str, width: float) -> list[Path]:
    """``runs``: the comparison's (its panels' setup); ``frame``: their :func:`summary`."""
    key, against, read = keys  # the key; with its context, and what is read, for the titles
    groups = list(frame.groupby(["dataset", "arch"]))
    per_row = max(1, min(len(groups), int(width // 3.2)))  # panels of >= 3.2 in
    rows = -(-len(groups) // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(width, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    panel = width / per_row
    for ax, ((dataset, arch), g) in zip(axes.flat, groups, strict=False):
        order, numeric = _order(g["value"].unique())
        x_of = {v: float(v) if numeric else i for i, v in enumerate(order)}
        norms = sorted(g["norm"].unique(), key=norm_sort_key)
        for i, norm in enumerate(norms):
            n = g[g["norm"] == norm]
            # categories (mixup=none,manifold): no line between them, each norm a little aside
            shift = 0.0 if numeric else 0.12 * (i - (len(norms) - 1) / 2)
            n = n.assign(x=n["value"].map(x_of) + shift).sort_values("x")
            ok = n[n["complete"] > 0]
            color = norm_color(norm)
            # plain lists: matplotlib probes an error bar's first element with float(), which
            # pandas 2 (a Series) and numpy (an array) warn about where a norm has one point
            below, above = ok["median"] - ok["q25"], ok["q75"] - ok["median"]
            ax.errorbar(
                ok["x"].tolist(),
                ok["median"].tolist(),
                yerr=[below.tolist(), above.tolist()],
                color=color,
                ls=norm_line(norm) if numeric else "none",
                marker=norm_marker(norm),
                capsize=3,
                label=norm_label(norm),
            )
            lost = n[(n["complete"] == 0) & (n["diverged"] > 0)]
            for x in lost["x"]:  # every seed diverged at this value
                mark_all_diverged(ax, x, color)
        own = g[g["own"]]["value"].unique()
        for v in own:
            ax.axvline(x_of[v], color="0.5", ls=":", lw=1)
        if len(own):
            ax.plot([], [], color="0.5", ls=":", label=OWN)
        positive = numeric and all(x_of[v] > 0 for v in order)
        log = positive and max(x_of.values()) / min(x_of.values()) >= 10
        if log:
            ax.set_xscale("log")
        if numeric:  # the values swept, as typed, where they fit
            tick_values(ax, order, log, panel)
        if not numeric:  # e.g. lists: wrapped and tilted, never over each other
            labels = [wrap(v, panel / max(len(order), 1), 7) for v in order]
            ax.set_xticks(range(len(order)), labels, rotation=30 if len(order) > 3 else 0)
            ax.set_xlim(-0.5, len(order) - 0.5)
        cell = runs[(runs["dataset"] == dataset) & (runs["arch"] == arch)]
        setup = describe(cell)
        title = f"{dataset} / {arch}: {read} vs {against}" + (f"; {setup}" if setup else "")
        ax.set_title(wrap(title, panel), loc="left")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{read.capitalize()} (%)")
        ax.grid(alpha=0.3)
    # every panel's norms (a norm may be in one panel only), in the suite's order
    order = [norm_label(n) for n in sorted(frame["norm"].unique(), key=norm_sort_key)] + [OWN]
    legend_below(fig, list(axes.flat), "median over complete seeds; bars: 25%-75%", order)
    return save(fig, out_dir, stem)


def write_comparisons(
    results: Results, experiment: str, out_dir: Path, width: float = WIDTH
) -> list[Path]:
    runs = results.runs[results.runs["experiment"] == experiment]
    written = []
    for key, context in swept(runs):
        written += write_comparison(results, experiment, key, out_dir, width, context)
    return written


__all__ = ["comparison_runs", "metric", "own_value", "summary", "swept", "write_comparisons"]
