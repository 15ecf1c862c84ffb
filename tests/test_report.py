"""Reporting on fabricated result trees whose medians and quartiles are known by construction."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from equinorm.report import collect, curves, finals, paired_difference
from equinorm.report.cli import main
from equinorm.report.tables import markdown, table_rows
from tests.conftest import write_run

EPOCHS = 30  # the length of every fabricated run (conftest.write_run)


EQUI = [94.0, 94.2, 93.8, 94.4, 94.1]  # seeds 0-4: median 94.1, q25 94.0, q75 94.2
BN = [93.0, 93.5, 92.9]  # seeds 0-2 complete: median 93.0, q25 92.95, q75 93.25


@pytest.fixture(autouse=True)
def _figures_closed():
    """Tests that keep a report's figures (plt.close patched) close them after: past 20 open,
    matplotlib warns in whichever later test of the process opens one."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def tree(tmp_path) -> Path:
    exp, cfg = "cifar10_wrn_short", "cifar10-wrn-{}"
    for seed, acc in enumerate(EQUI):
        write_run(tmp_path, exp, cfg.format("equi"), seed, acc, equilibrium=True)
    for seed, acc in enumerate(BN):
        write_run(tmp_path, exp, cfg.format("bn"), seed, acc)
    write_run(tmp_path, exp, cfg.format("bn"), 3, 90.0, status="diverged", epochs=7, diverge_at=7)
    write_run(tmp_path, exp, cfg.format("bn"), 4, 93.9, status="running", epochs=10)
    write_run(tmp_path, exp, cfg.format("gn"), 0, 92.0, status=None, epochs=5)  # no summary
    # noise a results tree really holds: Hydra's empty job dirs, sweep files, submitit logs
    (tmp_path / "runs" / exp / "cifar10-wrn-ws_gn" / "seed=0").mkdir(parents=True)
    (tmp_path / "runs" / "multirun.yaml").write_text("x: 1\n")
    (tmp_path / "runs" / ".submitit" / "123").mkdir(parents=True)
    (tmp_path / "runs" / exp / "not-a-config" / "seed=0").mkdir(parents=True)
    return tmp_path


def test_collect_identifies_runs_by_their_records_and_status(tree):
    res = collect(tree)
    assert len(res.runs) == 5 + 5 + 1
    counts = res.runs.groupby("norm")["status"].value_counts().to_dict()
    assert counts[("bn", "complete")] == 3 and counts[("bn", "diverged")] == 1
    assert counts[("bn", "unfinished")] == 1 and counts[("gn", "unfinished")] == 1
    assert set(res.history.columns) >= {"experiment", "norm", "seed", "epoch", "test_acc"}
    assert res.experiments() == ["cifar10_wrn_short"]


def test_final_medians_and_quartiles(tree):
    fin = finals(collect(tree).runs).set_index("norm")
    assert fin.loc["equi", "acc_median"] == pytest.approx(94.1)
    assert fin.loc["equi", "acc_q25"] == pytest.approx(94.0)
    assert fin.loc["equi", "acc_q75"] == pytest.approx(94.2)
    assert fin.loc["bn", "acc_median"] == pytest.approx(93.0)
    assert fin.loc["bn", "acc_q25"] == pytest.approx(92.95)
    assert fin.loc["bn", "acc_q75"] == pytest.approx(93.25)
    assert fin.loc["bn", ["complete", "diverged", "unfinished"]].tolist() == [3, 1, 1]
    assert fin.loc["gn", "complete"] == 0 and np.isnan(fin.loc["gn", "acc_median"])


def test_pointwise_curves_keep_a_diverged_run_until_it_diverged(tree):
    res = collect(tree)
    c = curves(res.history, "test_acc").set_index(["norm", "epoch"])
    # epoch 5: bn seeds 0, 1, 2, the unfinished seed 4 and seed 3, which diverged in epoch 7
    expected = np.array([93.0, 93.5, 92.9, 90.0, 93.9]) * 5 / EPOCHS
    assert c.loc[("bn", 5), "n"] == 5
    assert c.loc[("bn", 5), "median"] == pytest.approx(np.median(expected))
    assert c.loc[("bn", 5), "q25"] == pytest.approx(np.percentile(expected, 25))
    assert c.loc[("bn", 7), "n"] == 4  # seed 3 diverged: it leaves the curve, n says so
    assert c.loc[("bn", 20), "n"] == 3  # the unfinished run stopped at epoch 10
    assert c.loc[("equi", EPOCHS), "median"] == pytest.approx(94.1)


def test_diverged_runs_can_count_at_chance_to_the_end(tree):
    res = collect(tree)
    c = curves(res.history, "test_acc", "chance", classes=lambda d: 10).set_index(["norm", "epoch"])
    assert c.loc[("bn", 7), "n"] == 5 and c.loc[("bn", EPOCHS), "n"] == 4  # seed 3 at chance
    at_end = np.array([93.0, 93.5, 92.9, 10.0])
    assert c.loc[("bn", EPOCHS), "median"] == pytest.approx(np.median(at_end))
    loss = curves(res.history, "test_loss", "chance", classes=lambda d: 10)
    assert loss.set_index(["norm", "epoch"]).loc[("bn", EPOCHS), "n"] == 4
    from equinorm.report.stats import divergences

    assert divergences(res.history)[["norm", "seed", "epoch"]].values.tolist() == [["bn", 3, 7]]


def test_a_cell_whose_runs_all_diverged_in_their_first_epoch_is_drawn_on_a_log_loss_figure(
    tmp_path,
):
    exp = "digits_demo"  # an Optuna search's trials: one seed per lr, the high ones diverge
    run = write_run(tmp_path, exp, "digits-preact_resnet18-gn", 0, 97.0, epochs=3, total=3)
    rows = ["epoch,lr,momentum,train_loss,train_acc,test_loss,test_acc,epoch_time_s"]
    rows += [
        f"{e},0.1,0.9,{loss},50.0,{loss},{acc},1.0"
        for e, loss, acc in ((1, 80.0, 30.0), (2, 1.0, 80.0), (3, 0.1, 97.0))
    ]  # early losses 800x the last: a log scale
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    for lr in ("0.3", "0.6"):
        variant = {"schedule.lr": lr}
        write_run(
            tmp_path,
            exp,
            "digits-preact_resnet18-gn",
            0,
            0.0,
            status="diverged",
            epochs=1,
            total=3,
            diverge_at=1,
            variant=variant,
        )
    assert main(["--results", str(tmp_path)]) == 0
    assert (tmp_path / "figures" / f"{exp}.png").read_bytes()[:4] == b"\x89PNG"
    # the lr comparison marks 0.3 and 0.6 "all diverged" inside its axis, not beyond the figure
    from PIL import Image

    with Image.open(tmp_path / "figures" / f"{exp}_hparam_schedule.lr.png") as png:
        assert png.width / png.height < 3, png.size


def test_an_experiment_without_a_finished_epoch_says_why_it_has_no_figure(tmp_path, capsys):
    """Every run diverged in its first epoch: the report wrote tables and no figure, silently."""
    for seed in range(2):
        args = dict(status="diverged", epochs=1, total=3, diverge_at=1)
        write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", seed, 0.0, **args)
    assert main(["--results", str(tmp_path)]) == 0
    assert not (tmp_path / "figures" / "digits_demo.png").exists()
    said = capsys.readouterr().err
    assert "digits_demo: no figure: none of its runs has a finished epoch" in said
    write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", 2, 90.0)
    assert main(["--results", str(tmp_path)]) == 0
    assert "no figure" not in capsys.readouterr().err


def test_paired_difference_equi_minus_bn_over_common_complete_seeds(tree):
    pairs = paired_difference(collect(tree).runs)
    row = pairs.iloc[0]
    assert row["n"] == 3  # seeds 0, 1, 2: differences 1.0, 0.7, 0.9
    assert row["median"] == pytest.approx(0.9)
    assert row["q25"] == pytest.approx(0.8)
    assert row["q75"] == pytest.approx(0.95)


def test_table_holds_our_numbers_beside_the_papers(tree):
    res = collect(tree)
    rows = {r["norm"]: r for r in table_rows(res, "cifar10_wrn_short")}
    assert rows["equi"]["paper"] == 94.0 and rows["equi"]["diff"] == pytest.approx(0.1)
    assert rows["bn"]["paper"] == 93.3 and rows["bn"]["diff"] == pytest.approx(-0.3)
    assert rows["gn"]["cells"][1] == "no complete run"
    md = markdown(res, "cifar10_wrn_short")
    assert "| EquiNorm | 94.10 (94.00-94.20) | 94.00 | +0.10 |" in md
    assert "| BatchNorm | 93.00 (92.95-93.25) | 93.30 | -0.30 |" in md
    # seeds complete / diverged / failed / unfinished / missing (the sweep expects 0-9 of equi, bn)
    assert "| 5 / 0 / 0 / 0 / 5 (10) |" in md and "| 3 / 1 / 0 / 1 / 5 (10) |" in md
    assert "| 0 / 0 / 0 / 1 / 0 |" in md  # gn: not in the sweep, nothing expected
    # verdicts: the paper's 94.0 inside our equi IQR 94.0-94.2; 93.3 outside bn's 92.95-93.25
    assert rows["equi"]["cells"][4] == "agrees (paper's median in our IQR)"
    assert rows["bn"]["cells"][4] == "differs"
    # equi - bn paired by seed (0-2): 1.0, 0.7, 0.9; exact Wilcoxon, 3 positive: p = 2/8
    assert rows["equi"]["cells"][5] == (
        "+0.90 [+0.70, +1.00], p = 0.25, n = 3 (CI and test disagree: more seeds needed); "
        "paper +0.70 (inside the CI)"  # with 3 pairs p >= 2/8: the CI alone cannot be read
    )
    assert rows["bn"]["cells"][5] == "-"


def test_a_blown_up_test_loss_reads_in_exponent_form(tree):
    """A finite test loss of 1.8e15 (BatchNorm's running statistics after a bad step) was
    written out to its last digit: '1801033869164544.000'."""
    for seed in range(3):
        path = tree / f"runs/cifar10_wrn_short/cifar10-wrn-bn/seed={seed}/summary.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"test_loss": 1.8e15 + seed}))
    md = markdown(collect(tree), "cifar10_wrn_short")
    assert "| 1.800e+15 (1.800e+15-1.800e+15) |" in md  # BatchNorm's
    assert "| 0.100 (0.100-0.100) |" in md  # EquiNorm's, fixed point as before


def test_a_test_loss_that_is_not_finite_is_counted_not_left_out_silently(tree):
    """Complete runs whose test loss was NaN (a network that overflows in evaluation mode only)
    left the loss column without a word: 'nan (nan-nan)', or a median over the other seeds."""

    def nan_loss(seeds):
        for seed in seeds:
            path = tree / f"runs/cifar10_wrn_short/cifar10-wrn-bn/seed={seed}/summary.json"
            path.write_text(json.dumps(json.loads(path.read_text()) | {"test_loss": None}))
        return markdown(collect(tree), "cifar10_wrn_short")

    assert "| 0.100 (0.100-0.100); 2 not finite |" in nan_loss([0, 1])  # BatchNorm's 3 seeds
    assert "| not finite |" in nan_loss([2])
    assert "| 0.100 (0.100-0.100) |" in nan_loss([])  # EquiNorm's, all finite, as before


def test_failed_runs_and_expected_norms_without_runs_are_counted(tmp_path):
    exp = "cifar10_preresnet152_mixup"  # its sweep: equi, bn, gn x seeds 0-9
    write_run(tmp_path, exp, "cifar10-preact_resnet152-equi", 0, 96.0)
    failed = tmp_path / "runs" / exp / "cifar10-preact_resnet152-equi" / "seed=1"
    failed.mkdir(parents=True)
    named = {"name": exp, "dataset": "cifar10", "arch": "preact_resnet152", "norm": "equi"}
    error = {"type": "DatasetError", "error": "no CIFAR files", **named, "seed": 1, "variant": {}}
    (failed / "error.json").write_text(json.dumps(error))  # as a failed job records it
    res = collect(tmp_path)
    assert res.runs.set_index("seed").loc[1, "status"] == "failed"
    rows = {r["norm"]: r for r in table_rows(res, exp)}
    assert rows["equi"]["cells"][-1] == "1 / 0 / 1 / 0 / 8 (10)"
    assert rows["bn"]["cells"][1] == "no runs" and rows["bn"]["missing"] == 10
    assert rows["gn"]["cells"][-1] == "0 / 0 / 0 / 0 / 10 (10)"
    assert "Failed: EquiNorm seed 1: no CIFAR files" in markdown(res, exp)


def _provenance(run_dir: Path, *commits: str) -> None:
    attempts = [{"commit": c.rstrip("+"), "dirty": c.endswith("+")} for c in commits]
    (run_dir / "provenance.json").write_text(json.dumps({"attempts": attempts}))


def test_runs_from_different_commits_are_warned_about_and_can_be_filtered(tmp_path, capsys):
    exp, old, new = "cifar10_wrn_short", "a" * 40, "b" * 40
    for seed in range(3):
        d = write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 94.0 + seed)
        _provenance(d, new if seed else old)
    d = write_run(tmp_path, exp, "cifar10-wrn-equi", 3, 90.0)
    _provenance(d, old, new + "+")  # resumed under a dirty newer tree
    res = collect(tmp_path)
    assert res.runs.set_index("seed").loc[3, "commit"] == "aaaaaaa / bbbbbbb+dirty"
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "all")]) == 0
    err = capsys.readouterr().err
    assert "different commits: aaaaaaa (1 run), aaaaaaa / bbbbbbb+dirty (1 run)" in err
    assert "bbbbbbb (2 runs)" in (tmp_path / "all" / "tables" / f"{exp}.md").read_text()
    out = tmp_path / "only"
    assert main(["--results", str(tmp_path), "--out", str(out), "--commit", new[:10]]) == 0
    assert "different commits" not in capsys.readouterr().err
    assert "| 2 / 0 / 0 / 0 / 8 (10) |" in (out / "tables" / f"{exp}.md").read_text()


def test_runs_of_one_commit_with_other_uncommitted_changes_are_told_apart(tmp_path, capsys):
    """Both were "abc1234+dirty": seeds trained before and after an uncommitted edit of the layer
    were pooled without a word."""
    exp, commit = "cifar10_wrn_short", "c" * 40
    for seed, diff in enumerate(["1" * 64, "1" * 64, "2" * 64]):
        d = write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 94.0)
        attempt = {"commit": commit, "dirty": True, "diff_sha256": diff}
        (d / "provenance.json").write_text(json.dumps({"attempts": [attempt]}))

    def report(*args: str) -> tuple[str, str]:
        out = tmp_path / "out"
        assert main(["--results", str(tmp_path), "--out", str(out), *args]) == 0
        return capsys.readouterr().err, (out / "tables" / f"{exp}.md").read_text()

    err, _ = report()
    assert "different commits: ccccccc+dirty.1111111 (2 runs), ccccccc+dirty.2222222 (1 run)" in err
    err, table = report("--commit", "ccccccc+dirty.111")
    assert "different commits" not in err and "| 2 / 0 / 0 / 0 / 8 (10) |" in table
    _, table = report("--commit", "ccccccc+dirty")  # with any uncommitted changes
    assert "| 3 / 0 / 0 / 0 / 7 (10) |" in table


def test_commit_filter_takes_exact_hashes_and_says_what_there_is(tmp_path, capsys):
    exp, old, new = "cifar10_wrn_short", "a" * 40, "ab" + "c" * 38
    for seed, commit in enumerate([old, new, new + "+"]):
        _provenance(write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 94.0), commit)

    def report(commit: str) -> tuple[int, str, str]:
        out = tmp_path / "out"
        code = main(["--results", str(tmp_path), "--out", str(out), "--commit", commit])
        table = (out / "tables" / f"{exp}.md").read_text() if code == 0 else ""
        return code, capsys.readouterr().err, table

    code, _, table = report(new[:7])  # clean runs of that commit only
    assert code == 0 and "| 1 / 0 / 0 / 0 / 9 (10) |" in table
    code, _, table = report(new[:9] + "+dirty")
    assert code == 0 and "| 1 / 0 / 0 / 0 / 9 (10) |" in table
    code, err, _ = report(new[:7] + "ddd")  # a wrong hash sharing the first 7 digits
    assert code == 2 and "trained no run" in err
    assert "aaaaaaa (1 run), abccccc (1 run), abccccc+dirty (1 run)" in err
    code, err, _ = report("a" * 7 + "0")
    assert code == 2 and err.count("\n") == 1 and "trained no run" in err
    code, err, _ = report("nothex!")
    assert code == 2 and "7 to 40 hex digits" in err
    _provenance(write_run(tmp_path, exp, "cifar10-wrn-equi", 3, 94.0), "a" * 7 + "f" * 33)
    code, err, _ = report("a" * 7)
    assert code == 2 and "is a prefix of aaaaaaaaaaaa, aaaaaaafffff" in err


def test_a_run_resumed_under_other_threads_is_named(tmp_path, capsys):
    exp = "cifar10_wrn_short"
    d = write_run(tmp_path, exp, "cifar10-wrn-equi", 0, 94.0)
    attempts = [{"commit": "a" * 40, "dirty": False, "threads": t} for t in (4, 2)]
    (d / "provenance.json").write_text(json.dumps({"attempts": attempts}))
    write_run(tmp_path, exp, "cifar10-wrn-equi", 1, 94.0)
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    note = "EquiNorm seed 0 was resumed with threads 4 -> 2"
    assert note in capsys.readouterr().err
    table = (tmp_path / "out" / "tables" / f"{exp}.md").read_text()
    assert note in table and "seed 1 was resumed" not in table


def test_verdict_statistics():
    from equinorm.report.paper import PaperResult
    from equinorm.report.verdict import bootstrap_median_ci, overlap, paired, wilcoxon_p

    d = np.array([0.3, 0.1, 0.4, 0.2, 0.5])
    assert wilcoxon_p(d) == pytest.approx(2 / 32)  # exact: all 5 positive
    assert wilcoxon_p(np.zeros(4)) == 1.0 and wilcoxon_p(np.array([1.0])) is None
    lo, hi = bootstrap_median_ci(d)
    assert 0.1 <= lo < 0.3 < hi <= 0.5
    assert bootstrap_median_ci(d) == (lo, hi)  # a fixed generator: reproducible reports
    text = paired(d).text(0.6)
    assert text.startswith("+0.30 [") and text.endswith(
        "p = 0.062, n = 5 (CI and test disagree: more seeds needed); paper +0.60 (outside the CI)"
    )
    assert "disagree" not in paired(np.arange(1.0, 9.0)).text()  # p = 0.0078: both say "not 0"
    assert paired(np.array([0.4])).text(0.6) == "+0.40, n = 1: n too small for a CI or a test"
    assert overlap({"median": 97.5, "q25": 97.5, "q75": 97.5, "n": 2}, PaperResult(97.0)) == (
        "n too small (n = 2)"
    )
    ours = {"median": 96.9, "q25": 96.8, "q75": 97.0, "n": 10}
    assert overlap(ours, PaperResult(96.87, 96.84, 97.04)) == (
        "agrees (paper's median in our IQR; our median in the paper's IQR)"
    )
    assert overlap(ours, PaperResult(97.5)) == "differs"
    assert overlap(ours, None) == "-"


def test_equal_paired_differences_tie_whatever_their_float_noise():
    """93.9 - 93.02 and 94.12 - 95.0 are +-0.88 apart in the 15th digit: ranked apart, not as
    the tie they are, the Wilcoxon p of the same seeds read 0.195 instead of 0.211."""
    from equinorm.report.verdict import paired

    rest = [2.0, 3.0, 4.0, 5.0, -6.0, 7.0]
    noisy = paired(np.array([93.9 - 93.02, 94.12 - 95.0, *rest]))
    exact = paired(np.array([0.88, -0.88, *rest]))
    assert noisy == exact and noisy.p_value == pytest.approx(0.2109375)


def test_a_papers_median_on_our_quartile_agrees_whatever_the_float_noise():
    """Our 25% quartile of 96.01 and 96.05 is interpolated to 96.02000000000001: the paper's
    96.02 read as outside our IQR, and the verdict 'differs'."""
    from equinorm.report.paper import PaperResult
    from equinorm.report.stats import iqr
    from equinorm.report.verdict import overlap

    ours = iqr([80.0, 81.0, 96.01, 96.05, 99.0, 99.5, 99.6, 99.7, 99.8, 99.9])
    assert ours["q25"] > 96.02  # the noise
    assert overlap(ours, PaperResult(96.02)) == "agrees (paper's median in our IQR)"


def test_report_script_writes_figures_and_tables_on_an_unseen_tree(tree, capsys):
    assert main(["--results", str(tree)]) == 0
    for name in (
        "cifar10_wrn_short.png",
        "cifar10_wrn_short.pdf",
        "cifar10_wrn_short_equilibrium.png",
        "cifar10_wrn_short_equilibrium.pdf",
    ):
        path = tree / "figures" / name
        assert path.stat().st_size > 5000, name
    assert (tree / "figures" / "cifar10_wrn_short.png").read_bytes()[:4] == b"\x89PNG"
    assert (tree / "figures" / "cifar10_wrn_short.pdf").read_bytes()[:4] == b"%PDF"
    md = (tree / "tables" / "cifar10_wrn_short.md").read_text()
    tex = (tree / "tables" / "cifar10_wrn_short.tex").read_text()
    assert "94.10 (94.00-94.20)" in md and r"\begin{tabular}" in tex and "94.10" in tex
    assert "EquiNorm" in capsys.readouterr().out


def test_legend_reads_like_the_papers(tree):
    from equinorm.report.figures import legend_label

    fin = finals(collect(tree).runs).set_index("norm")
    assert legend_label("equi", fin.loc["equi"], 5) == "EquiNorm (94.10 IQR 94.00-94.20)"
    assert legend_label("bn", fin.loc["bn"], 5) == (
        "BatchNorm (93.00 IQR 92.95-93.25, n=3, 1 diverged)"
    )
    assert legend_label("gn", fin.loc["gn"], 5) == "GroupNorm (no complete run)"
    one = fin.loc["equi"].copy()
    one["complete"] = 1
    assert legend_label("equi", one, 5) == "EquiNorm (94.10, n=1)"  # not "IQR 94.10-94.10"


def test_no_runs_is_a_clear_message_not_a_crash(tmp_path, capsys):
    assert main(["--results", str(tmp_path)]) == 1
    assert "no runs under" in capsys.readouterr().err
    (tmp_path / "debug" / "runs").mkdir(parents=True)  # only debug=smoke runs: says where
    assert main(["--results", str(tmp_path)]) == 1
    assert f"debug=smoke's runs: --results {tmp_path / 'debug'}" in capsys.readouterr().err
    write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", 0, 90.0)
    assert main(["--results", str(tmp_path / "runs")]) == 1  # the runs/ folder itself
    assert f"holds runs/: --results {tmp_path}" in capsys.readouterr().err
    assert main(["--results", str(tmp_path), "--experiment", "digits_dmeo"]) == 1
    err = capsys.readouterr().err  # a typo: the experiments that are there
    assert "no runs of digits_dmeo under" in err and "with runs there: digits_demo)" in err


def test_the_results_directory_may_be_given_as_equinorm_evaluate_takes_runs(tmp_path, capsys):
    """`equinorm-report results/` was argparse's "unrecognized arguments: results/"."""
    write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", 0, 90.0)
    assert main([str(tmp_path), "--out", str(tmp_path / "a")]) == 0
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "b")]) == 0
    tables = [sorted(p.name for p in (tmp_path / d / "tables").iterdir()) for d in "ab"]
    assert tables[0] == tables[1] and "digits_demo.md" in tables[0]
    assert main([str(tmp_path), "--results", str(tmp_path), "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as two:
        main([str(tmp_path / "runs"), "--results", str(tmp_path)])
    assert two.value.code == 2 and "give one results directory" in capsys.readouterr().err


def _svhn_setup(world, virtual, per_device, width=1.0):
    return {
        "world_size": world,
        "virtual_devices": virtual,
        "batch_size": per_device,
        "global_batch": world * virtual * per_device,
        "width_mult": width,
    }


def test_tables_and_figure_titles_show_the_global_batch_and_width(tmp_path, monkeypatch):
    exp = "svhn_wrn_mixup"
    for seed in range(3):  # the paper's 2 GPUs x 128, once as 2 ranks and once as virtual devices
        setup = _svhn_setup(2, 1, 128) if seed else _svhn_setup(1, 2, 128)
        write_run(tmp_path, exp, "svhn-wrn-equi", seed, 97.0, setup=setup)
    results = collect(tmp_path)
    text = markdown(results, exp)
    assert "svhn / wrn (global batch 256 (2 devices x 128), width x1)" in text
    from equinorm.report.tables import latex

    assert r"\emph{svhn / wrn (global batch 256 (2 devices x 128), width x1)}" in latex(
        results, exp
    )
    import equinorm.report.figures as figures

    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_experiment(results, exp, tmp_path / "figures")
    title = closed[0].axes[1].get_title()  # centred over the row
    assert " ".join(title.split()).endswith("; global batch 256 (2 devices x 128), width x1")
    assert all(len(line) <= 120 for line in title.splitlines())  # wrapped to the figure


def test_a_long_variant_title_does_not_squeeze_the_panels(tmp_path, monkeypatch):
    exp = "svhn_wrn_mixup"
    lr = {"dataset.val_size": "300", "schedule.lr": "0.07035737028722146"}  # an Optuna trial's
    for seed in range(2):
        write_run(tmp_path, exp, "svhn-wrn-bn", seed, 97.0)
        write_run(tmp_path, exp, "svhn-wrn-bn", seed, 96.0, variant=lr)
    import equinorm.report.figures as figures

    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_experiment(collect(tmp_path), exp, tmp_path / "figures")
    panels = [ax for ax in closed[0].axes if ax.axison]
    assert len(panels) == 6  # two rows of three (the legend rows have no axis)
    # the panels share the width (a left-aligned title as wide as the row once squeezed them
    # to a tenth of it: the layout keeps a title's middle inside the figure)
    assert all(ax.get_position().width > 0.18 for ax in panels)
    titles = ["".join(ax.get_title().split()) for ax in panels]
    assert any("schedule.lr=0.07035737028722146" in t for t in titles)


def test_a_cell_whose_runs_differ_in_batch_width_or_precision_says_so(tmp_path):
    """train.precision=auto is bf16 on a GPU, fp32 on a CPU: seeds trained on each share a cell
    (the device is no part of a run's identity) and were pooled without a word."""
    exp = "svhn_wrn_mixup"
    setup = _svhn_setup(1, 1, 128, 0.25) | {"precision": "fp32"}
    write_run(tmp_path, exp, "svhn-wrn-bn", 0, 97.0, setup=setup)
    setup = _svhn_setup(1, 2, 128, 1.0) | {"precision": "bf16"}
    write_run(tmp_path, exp, "svhn-wrn-bn", 1, 97.0, setup=setup)
    write_run(tmp_path, exp, "svhn-wrn-bn", 2, 97.0)  # an old summary without the fields
    text = markdown(collect(tmp_path), exp)
    assert "global batch 128 / 256 (runs differ), width x0.25 / x1 (runs differ)" in text
    assert "precision bf16 / fp32 (runs differ)" in text
    one = tmp_path / "one"  # runs that agree: their precision is not said
    bf16 = _svhn_setup(1, 1, 128) | {"precision": "bf16"}
    write_run(one, exp, "svhn-wrn-equi", 0, 97.0, setup=bf16)
    assert "\nsvhn / wrn (global batch 128, width x1)\n" in markdown(collect(one), exp)


def _lr_run(root: Path, exp: str, norm: str, variant: dict, seed: int, acc: float):
    d = write_run(root, exp, f"cifar10-wrn-{norm}", seed, acc, variant=variant)
    (d / "config.yaml").write_text("schedule:\n  name: step\n  lr: 7.0\n")  # hand-edited: unread
    return d


def test_a_value_whose_runs_all_failed_makes_no_comparison(tmp_path):
    """equinorm-tune with a validation split the training set cannot hold: every run at that
    value failed, and the report drew an empty lr figure (no point) and a one-point val_size
    comparison. A diverged value is a result: it still compares."""
    from equinorm.report.hparams import swept

    exp = "cifar10_wrn_overfit"
    for seed in range(2):
        for lr in ("0.05", "0.2"):
            _lr_run(tmp_path, exp, "bn", {"schedule.lr": lr, "dataset.val_size": "5000"}, seed, 0.0)
        write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 90.0, variant={"schedule.lr": "0.05"})
    for d in (tmp_path / "runs" / exp / "cifar10-wrn-bn").glob("*val_size*/seed=*"):
        named = json.loads((d / "summary.json").read_text())  # failed at its first check
        error = {"error": "dataset.val_size=5000: too large", "type": "ConfigError"}
        (d / "error.json").write_text(json.dumps({**error, **named}))
        (d / "summary.json").write_text(json.dumps({**named, "status": "running", "epoch": 0}))
    assert set(collect(tmp_path).runs["status"]) == {"failed", "complete"}
    assert swept(collect(tmp_path).runs) == []
    assert main(["--results", str(tmp_path)]) == 0
    assert not list((tmp_path / "figures").glob("*hparam*"))
    write_run(tmp_path, exp, "cifar10-wrn-bn", 0, 0.0, status="diverged", diverge_at=2)
    assert swept(collect(tmp_path).runs) == [("schedule.lr", ())]


def test_a_comparisons_cells_name_the_seeds_their_medians_leave_out():
    """A value with a failed or unfinished seed read 'n=2' beside its neighbours' 'n=3': only a
    diverged seed was named."""
    import pandas as pd

    from equinorm.report.hparams import _table, summary

    statuses = {"0.05": ["complete"] * 3, "0.1": ["complete", "complete", "failed", "unfinished"]}
    runs = pd.DataFrame(
        [
            {"experiment": "e", "dataset": "cifar10", "arch": "wrn", "norm": "bn", "seed": seed}
            | {"status": status, "test_acc": 90.0, "val_acc": None, "items": {"schedule.lr": lr}}
            for lr, seeds in statuses.items()
            for seed, status in enumerate(seeds)
        ]
    )
    _, rows = _table(summary(runs, "schedule.lr"), "schedule.lr")
    assert [row[2] for row in rows] == [
        "90.00 (90.00-90.00), n=3",
        "90.00 (90.00-90.00), n=2, 1 failed, 1 unfinished",
    ]


def test_a_sweep_over_a_key_gets_a_comparison_figure_and_table(tmp_path, capsys):
    exp = "cifar10_wrn_overfit"  # its own lr: 0.1
    long = {f"dataset.augment.k{i}": "x" * 12 for i in range(8)}  # a hashed directory name
    for seed in range(3):
        for norm, shift in (("equi", 0.0), ("bn", -0.5)):
            _lr_run(tmp_path, exp, norm, {}, seed, 94.0 + shift + 0.1 * seed)
            _lr_run(tmp_path, exp, norm, {"schedule.lr": "0.05"}, seed, 93.0 + shift + 0.1 * seed)
            _lr_run(tmp_path, exp, norm, {"schedule.lr": "0.4"}, seed, 92.0 + shift + 0.1 * seed)
            width = {"train.batch_size": "64", **long}  # two keys: no single-key comparison
            _lr_run(tmp_path, exp, norm, width, seed, 80.0)
            _lr_run(tmp_path, exp, norm, {"optim.weight_decay": "0.0005", **long}, seed, 81.0)
    # a run that changes two keys is in no comparison of the experiment itself, but in that of
    # mixup at lr 0.4 (beside the runs at lr 0.4 and the experiment's mixup)
    _lr_run(tmp_path, exp, "equi", {"mixup": "input", "schedule.lr": "0.4"}, 0, 50.0)
    hashed = {"schedule.momentum": "0.8" * 70}  # one key, its name too long: hashed
    for seed in range(2):
        _lr_run(tmp_path, exp, "bn", hashed, seed, 70.0)
    # a search scored on a validation split (issue 25): compared with itself, not with the rest
    held_out = {"dataset.val_size": "300"}
    for lr, acc in (("0.02", 60.0), ("0.3", 61.0)):
        d = _lr_run(tmp_path, exp, "bn", {**held_out, "schedule.lr": lr}, 0, acc)
        summary_json = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary_json, "val_acc": acc - 5}))
    from equinorm.report.hparams import summary, swept

    res = collect(tmp_path)
    assert any("..." in v for v in res.runs["variant"])  # hashed names, read from the records
    protocol = (("dataset.val_size", "300"),)
    at_lr = (("schedule.lr", "0.4"),)
    assert swept(res.runs) == [
        ("mixup", at_lr),
        ("schedule.lr", ()),
        ("schedule.lr", protocol),
        ("schedule.momentum", ()),
    ]
    mixup = summary(res.runs, "mixup", at_lr).set_index(["norm", "value"])["complete"]
    assert mixup.to_dict() == {("bn", "none"): 3, ("equi", "input"): 1, ("equi", "none"): 3}
    searched = summary(res.runs, "schedule.lr", protocol).set_index("value")
    assert list(searched.index) == ["0.02", "0.3"] and not searched["own"].any()
    assert searched.loc["0.3", "median"] == pytest.approx(56.0)  # read as it was chosen: val
    frame = summary(res.runs, "schedule.lr").set_index(["norm", "value"])
    assert frame.loc[("equi", "0.1"), "median"] == pytest.approx(94.1)  # the experiment's value
    assert frame.loc[("equi", "0.1"), "own"] and not frame.loc[("equi", "0.4"), "own"]
    assert frame.loc[("bn", "0.4"), "median"] == pytest.approx(91.6)
    assert frame.loc[("equi", "0.4"), "complete"] == 3  # the two-key run is not among them
    assert main(["--results", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / f"{exp}_hparam_schedule.lr.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| cifar10")]
    assert [r.split(" | ")[1] for r in rows] == ["0.05", "0.1 (experiment's)", "0.4"]  # once
    assert "94.10 (94.05-94.15), n=3" in rows[1]
    png = tmp_path / "figures" / f"{exp}_hparam_schedule.lr.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "figures" / f"{exp}_hparam_schedule.momentum.png").is_file()
    stem = f"{exp}_hparam_schedule.lr_dataset.val_size=300"
    table = (tmp_path / "tables" / f"{stem}.md").read_text()
    assert "final validation accuracy (%) against schedule.lr (dataset.val_size=300)" in table
    assert "56.00 (56.00-56.00), n=1" in table
    # and the main table has one section per variant, the experiment's own first
    md = (tmp_path / "tables" / f"{exp}.md").read_text()
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    assert titles[0] == "## cifar10 / wrn" and "## cifar10 / wrn / schedule.lr=0.05" in md
    # the search's trials (measured on a validation split) are not rows of the main figure and
    # table: a 20-trial search would add 20 of them
    assert not any("val_size" in t for t in titles) and len(titles) == 7
    assert "2 run(s) measured another way" in capsys.readouterr().err


def _panel_titles(fig) -> list[str]:
    return [" ".join(ax.get_title(loc="left").split()) for ax in fig.axes if ax.axison]


def test_a_comparison_draws_the_archs_that_hold_two_values_with_every_panels_norms(
    tmp_path, monkeypatch
):
    """`-m arch=wrn,preact_resnet18,resnet50 ...` with mixup=manifold for some norms: a mixup
    comparison drew resnet50's single value as a panel of one point (and where no architecture
    held two values, a 'comparison' across architectures only, as where each norm sat at a
    value of its own: a tuned comparison's picks); its legend named the first panel's norms
    alone; a panel's caption described runs outside the comparison."""
    import equinorm.report.figures as figures
    from equinorm.report.hparams import summary, swept

    exp, fp32, manifold = "cifar10_wrn_overfit", {"precision": "fp32"}, {"mixup": "manifold"}
    for seed in range(2):
        write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 90.0, setup=fp32)
        write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 92.0, variant=manifold, setup=fp32)
        write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 91.0, variant=manifold, setup=fp32)
        write_run(tmp_path, exp, "cifar10-preact_resnet18-gn", seed, 80.0, variant=manifold)
        write_run(tmp_path, exp, "cifar10-preact_resnet18-gn", seed, 81.0)
        write_run(tmp_path, exp, "cifar10-resnet50-wn", seed, 70.0, variant=manifold)
        bf16 = {"train.precision": "bf16"}  # beside the comparison, in a cell of it
        setup = {"precision": "bf16"}
        write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 50.0, variant=bf16, setup=setup)
    runs = collect(tmp_path).runs
    assert ("mixup", ()) in swept(runs)
    frame = summary(runs, "mixup")
    assert set(frame["arch"]) == {"wrn", "preact_resnet18"}  # resnet50 holds one value
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    assert main(["--results", str(tmp_path)]) == 0
    (fig,) = [f for f in closed if any("vs mixup" in t for t in _panel_titles(f))]
    titles = _panel_titles(fig)
    assert len(titles) == 2 and not any("precision" in t for t in titles)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["EquiNorm", "BatchNorm", "GroupNorm", "the experiment's value"]
    # one architecture per value, or one norm per value: nothing to compare
    alone = tmp_path / "alone"
    for seed in range(2):
        write_run(alone, exp, "cifar10-wrn-equi", seed, 90.0)
        write_run(alone, exp, "cifar10-resnet50-wn", seed, 70.0, variant=manifold)
        write_run(alone, exp, "cifar10-resnet50-bn", seed, 70.0)
    assert swept(collect(alone).runs) == []
    assert summary(collect(alone).runs, "mixup", (("train.batch_size", "64"),)).empty  # no run


def test_a_comparison_puts_the_experiments_own_runs_at_the_value_they_ran(tmp_path):
    """The runs at the experiment's value (no variant item for the key) sit at the value of the
    config each was named against: under debug=smoke its 2 epochs (the experiment has 300),
    with ws_gn its own norm.eps (1e-06, where EquiNorm's is 0.0), an unset train.devices
    at 1 (what the run trained on, as its identity counts it); an experiment of the user's
    own (not in conf/experiment) reads it from the run's config.yaml, as it was left out before."""
    exp, smoke = "cifar10_wrn_overfit", {"debug": "smoke"}
    for seed in range(2):
        write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 50.0, variant=smoke)
        write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 40.0, variant={**smoke, "epochs": "1"})
        for norm in ("equi", "ws_gn"):
            write_run(tmp_path, exp, f"cifar10-wrn-{norm}", seed, 90.0)
            write_run(tmp_path, exp, f"cifar10-wrn-{norm}", seed, 80.0, variant={"norm.eps": "1"})
        write_run(tmp_path, exp, "cifar10-wrn-equi", seed, 85.0, variant={"train.devices": "2"})
        for lr, acc in (("0.2", 70.0), ("0.05", 60.0)):
            variant = {"schedule.lr": lr} if lr == "0.05" else None
            d = write_run(tmp_path, "mine", "cifar10-wrn-bn", seed, acc, variant=variant)
            (d / "config.yaml").write_text(f"schedule:\n  name: step\n  lr: {lr}\n")
    from equinorm.report.hparams import summary

    runs = collect(tmp_path).runs
    ours = runs[runs["experiment"] == exp]
    epochs = summary(ours, "epochs", (("debug", "smoke"),)).set_index("value")
    assert list(epochs.index) == ["1", "2"] and epochs.loc["2", "own"]
    eps = summary(ours, "norm.eps").set_index(["norm", "value"])
    assert sorted(eps.index) == [("equi", "0.0"), ("equi", "1"), ("ws_gn", "1"), ("ws_gn", "1e-06")]
    assert eps.loc[("ws_gn", "1e-06"), "own"] and eps.loc[("ws_gn", "1e-06"), "median"] == 90.0
    devices = summary(ours, "train.devices").set_index(["norm", "value"])  # unset: 1, not null
    assert sorted(devices.index) == [("equi", "1"), ("equi", "2"), ("ws_gn", "1")]
    assert main(["--results", str(tmp_path), "--experiment", "mine"]) == 0
    table = (tmp_path / "tables" / "mine_hparam_schedule.lr.md").read_text()
    rows = [r.rstrip(" |").split(" | ")[1:] for r in table.splitlines() if r.startswith("| cifar")]
    assert rows == [
        ["0.05", "60.00 (60.00-60.00), n=2"],
        ["0.2 (experiment's)", "70.00 (70.00-70.00), n=2"],  # was left out
    ]


def test_a_sweep_made_with_other_fixed_overrides_is_compared_in_their_context(tmp_path):
    """`-m schedule.lr=0.1,0.05 train.batch_size=64` (its runs' variants share batch 64) and
    the same with eight long keys fixed: a comparison of lr each, at that setting, named by it
    (a long name hashed, as run directories are); there was none."""
    exp, at64 = "cifar10_wrn_overfit", {"train.batch_size": "64"}
    long = {f"dataset.augment.k{i}": "x" * 12 for i in range(8)}
    for seed in range(2):
        for fixed, shift in ((at64, 0.0), (long, -20.0)):
            write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 80.0 + shift, variant=fixed)
            lr = {**fixed, "schedule.lr": "0.05"}
            write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 70.0 + shift, variant=lr)
    assert main(["--results", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / f"{exp}_hparam_schedule.lr_train.batch_size=64.md").read_text()
    assert "final test accuracy (%) against schedule.lr (train.batch_size=64)" in table
    rows = [r.rstrip(" |").split(" | ")[1:] for r in table.splitlines() if r.startswith("| cifar")]
    assert rows == [
        ["0.05", "70.00 (70.00-70.00), n=2"],
        ["0.1 (experiment's)", "80.00 (80.00-80.00), n=2"],
    ]
    hashed = sorted((tmp_path / "tables").glob(f"{exp}_hparam_schedule.lr_dataset.augment*.md"))
    assert len(hashed) == 1 and "..." in hashed[0].name and len(hashed[0].name) < 130
    assert "60.00 (60.00-60.00), n=2" in hashed[0].read_text()


def test_a_comparison_figure_marks_the_values_swept_as_typed(tmp_path, monkeypatch):
    """A few swept values are the x ticks, as typed (matplotlib put 1.2, 1.4, ... between
    train.devices 1 and 2, and 10^-2 on an lr axis); many close together keep its own."""
    exp = "cifar10_wrn_overfit"  # its own lr 0.1, batch 128, devices unset (1)
    variants = [{"schedule.lr": "0.01"}, {"schedule.lr": "0.4"}, {"train.devices": "2"}]
    variants += [{"train.batch_size": str(b)} for b in range(100, 400, 10)]
    for seed in range(2):
        for variant in [{}, *variants]:
            write_run(tmp_path, exp, "cifar10-wrn-bn", seed, 90.0, variant=variant)
    import equinorm.report.figures as figures

    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    assert main(["--results", str(tmp_path), "--experiment", exp]) == 0
    ticks = {
        ax.get_xlabel(): [t.get_text() for t in ax.get_xticklabels()]
        for fig in closed
        for ax in fig.axes
        if ax.axison and ax.get_xlabel()
    }
    assert ticks["schedule.lr"] == ["0.01", "0.1", "0.4"]
    assert ticks["train.devices"] == ["1", "2"]
    assert len(ticks["train.batch_size"]) < 10  # its 30 values side by side would overlap


def test_a_comparison_over_categories_joins_no_points_and_sets_norms_apart(tmp_path, monkeypatch):
    """mixup=none,input,manifold was drawn as a curve through the categories, and one norm's
    points hid under another's where they were equal."""
    exp = "digits_demo"  # its own mixup: none
    for seed in range(2):
        for config in ("digits-preact_resnet18-equi", "digits-preact_resnet18-bn"):
            for variant in ({}, {"mixup": "input"}, {"mixup": "manifold"}):
                write_run(tmp_path, exp, config, seed, 90.0, variant=variant)
    import equinorm.report.figures as figures

    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    assert main(["--results", str(tmp_path), "--experiment", exp]) == 0
    (ax,) = [ax for fig in closed for ax in fig.axes if ax.axison and ax.get_xlabel() == "mixup"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input", "manifold", "none"]
    drawn = [bars.lines[0] for bars in ax.containers]  # each norm's medians
    assert len(drawn) == 2 and all(line.get_linestyle() == "None" for line in drawn)
    (equi, bn) = (line.get_xdata() for line in drawn)
    assert all(abs(a - b) > 0.05 and round(a) == round(b) for a, b in zip(equi, bn, strict=True))


def test_the_equilibrium_figure_has_a_panel_per_cell_and_variant(tmp_path):
    exp = "digits_demo"
    for seed in range(2):
        write_run(tmp_path, exp, "digits-preact_resnet18-equi", seed, 98.0, equilibrium=True)
        variant = {"schedule.lr": "0.05"}
        write_run(
            tmp_path,
            exp,
            "digits-preact_resnet18-equi",
            seed,
            97.0,
            equilibrium=True,
            variant=variant,
        )
    res = collect(tmp_path)
    assert set(res.equilibrium["variant"]) == {"", "schedule.lr=0.05"}
    import matplotlib.pyplot as plt

    from equinorm.report import figures

    drawn = []
    real = plt.subplots
    with pytest.MonkeyPatch.context() as m:
        m.setattr(plt, "subplots", lambda *a, **k: drawn.append(a) or real(*a, **k))
        figures.plot_equilibrium(res.equilibrium, exp, tmp_path)
    assert drawn[0][:2] == (2, 1)  # two cells, two panels, never averaged together


def test_reports_are_byte_identical_when_the_runs_are(tree):
    first, second = tree / "one", tree / "two"
    assert main(["--results", str(tree), "--out", str(first)]) == 0
    assert main(["--results", str(tree), "--out", str(second)]) == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 9  # figure, equilibrium figure, table, time to target: png+pdf, md+tex
    assert first / ".equinorm-cifar10_wrn_short.json" in [first / f for f in files]  # their list
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (texlive)")
def test_the_tex_tables_compile_with_booktabs(tree, tmp_path):
    exp = "cifar10_wrn_short"
    for seed in range(2):
        for lr in (0.05, 0.4):
            _lr_run(tree, exp, "equi", f"schedule.lr={lr}", lr, seed, 90.0 - seed - lr)
    assert main(["--results", str(tree)]) == 0
    tables = sorted((tree / "tables").glob("*.tex"))
    assert len(tables) == 2
    body = "\n".join(rf"\input{{{t}}}\par" for t in tables)
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n"
        "\\usepackage[a3paper,landscape,margin=1cm]{geometry}\n"
        f"\\begin{{document}}\n\\tiny\n{body}\n\\end{{document}}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_damaged_tree_still_gets_every_other_figure_and_table(tree, capsys):
    exp = "cifar10_wrn_short"
    cell = tree / "runs" / exp
    history = cell / "cifar10-wrn-equi" / "seed=1" / "history.csv"
    history.write_text(history.read_text() + "garbage,x,y,z,1,2,3,4\n")
    repeated = cell / "cifar10-wrn-equi" / "seed=2" / "history.csv"
    header = repeated.read_text().splitlines()[0]
    repeated.write_text(repeated.read_text() + header + "\n")  # a resumed writer's second header
    (cell / "cifar10-wrn-gn" / "seed=0" / "config.yaml").write_text("name: [unclosed\n")
    (cell / "cifar10-wrn-bn" / "seed=0" / "history.csv").unlink()  # complete, no history
    no_epochs = cell / "cifar10-wrn-bn" / "seed=1" / "history.csv"  # a header of other words
    no_epochs.write_text("lr,test_acc\n0.1,50\n")  # was a KeyError: 'epoch'
    (cell / "cifar10-wrn-equi" / "seed=3" / "equilibrium.csv").write_text("foo,bar\n1,2\n")
    assert main(["--results", str(tree)]) == 0
    err = capsys.readouterr().err
    assert "seed=1/history.csv: line 32: epoch = 'garbage' is not a number" in err
    assert "seed=2/history.csv: line 32: epoch = 'epoch' is not a number" in err
    assert "cifar10-wrn-gn/seed=0/config.yaml: no readable identity" in err
    assert "cifar10-wrn-bn/seed=0/history.csv: not found" in err
    assert "bn/seed=1/history.csv: no epoch column (its header: lr, test_acc)" in err
    assert "seed=3/equilibrium.csv: no epoch, layer, positive, negative columns" in err
    table = (tree / "tables" / f"{exp}.md").read_text()
    assert "Unreadable: EquiNorm seed 1: history.csv line 32" in table
    assert "Unreadable: BatchNorm seed 0: no history.csv" in table
    assert (tree / "figures" / f"{exp}.pdf").stat().st_size > 5000
    assert (tree / "figures" / f"{exp}_equilibrium.png").is_file()
    assert not list(tree.rglob(".report-*"))  # the staging folders are gone


def test_the_report_never_replaces_tracked_files_unless_asked(tree, capsys):
    def git(*args):
        subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True)

    assert main(["--results", str(tree)]) == 0
    table = tree / "tables" / "cifar10_wrn_short.md"
    git("init", "-q")
    git("add", "tables/cifar10_wrn_short.md")
    table.write_text("committed\n")
    write_run(tree, "cifar10_wrn_short", "cifar10-wrn-bn", 7, 99.0)
    capsys.readouterr()
    assert main(["--results", str(tree)]) == 0
    assert table.read_text() == "committed\n"
    err = capsys.readouterr().err
    assert "left 1 file(s) that git tracks as they were" in err and "--overwrite-tracked" in err
    assert main(["--results", str(tree), "--overwrite-tracked"]) == 0
    assert table.read_text().startswith("# cifar10_wrn_short")


def test_a_report_removes_what_its_previous_one_drew_from_runs_now_gone(tmp_path, capsys):
    """Deleting a sweep's runs left its comparison figure and table beside today's report."""
    exp = "cifar10_wrn_overfit"
    for seed in range(2):
        for norm in ("equi", "bn"):
            _lr_run(tmp_path, exp, norm, {}, seed, 94.0)
            _lr_run(tmp_path, exp, norm, {"schedule.lr": "0.4"}, seed, 92.0)
    assert main(["--results", str(tmp_path)]) == 0
    drawn = [p for p in tmp_path.glob("*/*") if "schedule.lr" in p.name]
    assert drawn  # the lr comparison's figure and table
    mine = tmp_path / "figures" / "my_notes.txt"  # not the report's: never touched
    mine.write_text("mine\n")
    for d in (tmp_path / "runs" / exp).glob("*/*schedule.lr=0.4*"):
        shutil.rmtree(d)
    capsys.readouterr()
    assert main(["--results", str(tmp_path)]) == 0
    assert not any(p.exists() for p in drawn) and mine.read_text() == "mine\n"
    assert f"equinorm: {exp}: removed {len(drawn)} file(s) of its previous report" in (
        capsys.readouterr().err
    )
    assert (tmp_path / "figures" / f"{exp}.png").is_file()  # today's are all there


def test_ctrl_c_during_a_report_is_one_line_and_leaves_no_partial_file(tree, capsys, monkeypatch):
    from equinorm.report import cli

    def interrupted(*args, **kwargs):
        (args[2] / "partial.png").write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "write_comparisons", interrupted)
    assert main(["--results", str(tree)]) == 130
    assert capsys.readouterr().err == (
        "equinorm: report interrupted; every file written so far is whole\n"
    )
    assert not (tree / "figures").exists() and not list(tree.rglob("partial.png"))


def test_a_norm_of_another_package_gets_a_colour_and_marker_of_its_own(tmp_path, monkeypatch):
    # its lines were drawn in matplotlib's first colour, a blue beside BatchNorm's blue
    import matplotlib.colors as mcolors

    import equinorm.report.figures as figures
    from equinorm.report.paper import NORM_COLORS, NORM_MARKERS, norm_color, norm_marker

    exp = "digits_demo"
    for norm in ("bn", "equi", "cwn", "cwn2"):
        for seed in range(3):
            write_run(tmp_path, exp, f"digits-preact_resnet18-{norm}", seed, 90.0 + seed)
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_experiment(collect(tmp_path), exp, tmp_path / "figures")
    drawn = {}
    for line in closed[0].axes[0].get_lines():
        name = line.get_label().split(" (")[0]
        drawn.setdefault(name, mcolors.to_hex(line.get_color()).upper())
    assert drawn["cwn"] == norm_color("cwn").upper() and drawn["cwn2"] == norm_color("cwn2").upper()
    assert len(set(drawn.values())) == 4 and drawn["BatchNorm"] == NORM_COLORS["bn"].upper()
    assert norm_marker("cwn") not in NORM_MARKERS.values()


def test_a_cell_without_a_finite_test_loss_says_so_in_its_loss_panel(tmp_path, monkeypatch):
    # the panel was blank, its epoch axis ticked -0.045 ... 0.045
    import equinorm.report.figures as figures

    for seed in range(2):
        write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", seed, 3.125, epochs=3)
        history = next((tmp_path / "runs").rglob(f"seed={seed}/history.csv"))
        rows = [line.split(",") for line in history.read_text().splitlines()]
        rows[1:] = [[*r[:5], "nan", *r[6:]] for r in rows[1:]]  # test_loss: eval logits NaN
        history.write_text("\n".join(",".join(r) for r in rows) + "\n")
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_experiment(collect(tmp_path), "digits_demo", tmp_path / "figures")
    acc, _, loss = closed[0].axes[:3]
    assert [t.get_text() for t in loss.texts] == ["no finite test loss"]
    assert loss.get_xlim() == acc.get_xlim() and acc.get_xlim()[0] >= 0


def test_titles_and_captions_wrap_at_spaces_only():
    """A sensitivity title broke "held-" / "out" across lines; words stay whole at any width."""
    from equinorm.report.figures import wrap

    text = "digits_demo: final validation accuracy vs optim.weight_decay (300 held-out images)"
    for tenths in range(20, 80):
        lines = wrap(text, tenths / 10).splitlines()
        assert " ".join(lines).split() == text.split(), tenths / 10


def test_the_legend_of_every_row_fits_in_the_figure(tmp_path, monkeypatch):
    """Three norms whose labels are a few characters shorter than the demo's: the column count,
    guessed from their length, put three columns in a figure that holds two, and the saved
    figure cut the third off (the legend stays out of the tight bounding box)."""
    exp = "digits_demo"
    accs = {"equi": (6.25, 6.25, 7.81), "bn": (9.0, 9.5, 9.9), "gn": (6.25, 9.38, 9.38)}
    for norm, values in accs.items():
        for seed, acc in enumerate(values):
            write_run(tmp_path, exp, f"digits-preact_resnet18-{norm}", seed, acc)
    import equinorm.report.figures as figures

    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_experiment(collect(tmp_path), exp, tmp_path / "figures")
    fig = closed[0]
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1 and len(legends[0].get_texts()) == 3
    box = legends[0].get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1, (box, fig.bbox)


@pytest.mark.parametrize("width", [7.0, 3.3])
def test_the_equilibrium_figure_fits_a_one_column_width(tmp_path, monkeypatch, width):
    """--width 3.3 (one column of a paper): the legend's two columns of the demo's 7 entries
    were wider than the figure, so the layout squeezed the panel to a sliver whose epoch ticks
    ran together, and the saved figure was 4.5 in wide, not 3.3."""
    from equinorm.report import figures

    for norm in ("equi", "bn", "gn"):
        config = f"digits-preact_resnet18-{norm}"
        write_run(tmp_path, "digits_demo", config, 0, 90.0, equilibrium=True)
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_equilibrium(collect(tmp_path).equilibrium, "digits_demo", tmp_path, width)
    fig = closed[0]
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.width <= width * fig.dpi, legend  # the saved figure (its tight box) holds it
    assert ax.get_position().width > 0.6  # of the figure's width: not squeezed by the legend
    assert len(ax.get_legend().get_texts()) == 7


@pytest.mark.parametrize("ws_gn", [True, False])
def test_the_equilibrium_figure_of_every_norm_stays_readable(tmp_path, monkeypatch, ws_gn):
    """Six norms, WS+GroupNorm's contributions 25 times EquiNorm's (its kernels have variance
    1): the panel was linear, every other norm a flat line at 0; the legend's 13 entries
    squeezed the panel until they covered its x label; 3 epochs were ticked 1.25, 1.5, ..."""
    from equinorm.report import figures

    exp = "digits_demo"
    norms = ["equi", "bn", "gn", "wn", "none"] + (["ws_gn"] if ws_gn else [])
    for norm in norms:
        d = write_run(tmp_path, exp, f"digits-preact_resnet18-{norm}", 0, 90.0, epochs=3, total=3)
        scale = 25 if norm == "ws_gn" else 2 if norm == "bn" else 1
        rows = [f"{e},c{i},{scale + i / 10},{-scale - i / 10}" for e in (1, 2, 3) for i in (0, 1)]
        (d / "equilibrium.csv").write_text("\n".join(["epoch,layer,positive,negative", *rows]))
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_equilibrium(collect(tmp_path).equilibrium, exp, tmp_path)
    (ax,) = closed[0].axes
    renderer = closed[0].canvas.get_renderer()
    assert ax.get_yscale() == ("symlog" if ws_gn else "linear")  # the demo's stays linear
    assert all(float(t).is_integer() for t in ax.get_xticks())
    legend, axis = ax.get_legend().get_window_extent(renderer), ax.xaxis.get_tightbbox(renderer)
    assert legend.y1 <= axis.y0, (legend, axis)  # under the x label, not over it


def test_a_one_column_figure_of_six_norms_keeps_its_legend_under_the_panels(tmp_path, monkeypatch):
    """--width 3.3 stacks a row's panels over a legend of one entry per line: the legend row
    held three, and six ran up over the loss panel's x label."""
    from equinorm.report import figures

    for norm in ("equi", "bn", "gn", "ws_gn", "wn", "none"):
        write_run(tmp_path, "digits_demo", f"digits-preact_resnet18-{norm}", 0, 90.0)
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.plot_experiment(collect(tmp_path), "digits_demo", tmp_path / "figures", width=3.3)
    fig = closed[0]
    renderer = fig.canvas.get_renderer()
    (key,) = [ax for ax in fig.axes if ax.get_legend()]
    loss = [ax for ax in fig.axes if ax.axison][-1]  # the lowest panel
    legend = key.get_legend().get_window_extent(renderer)
    assert len(key.get_legend().get_texts()) == 6
    assert legend.y1 <= loss.xaxis.get_tightbbox(renderer).y0, legend


@pytest.mark.parametrize("status", ["running", "failed"])
def test_a_tree_where_no_run_has_finished_an_epoch_is_reported(status, tmp_path, capsys):
    """A sweep whose every job failed before an epoch ended (no dataset there: make reproduce-*
    reports after its sweeps), or one in its first epoch, was KeyError: 'test_acc'."""
    from equinorm.run.record import RunDir

    exp, cfg = "cifar10_wrn_short", "cifar10-wrn-{}"
    for norm in ("equi", "bn"):
        if status == "running":
            write_run(tmp_path, exp, cfg.format(norm), 0, 0.0, status=status, epochs=0)
            continue
        named = {"name": exp, "dataset": "cifar10", "arch": "wrn", "norm": norm, "seed": 0}
        where = tmp_path / "runs" / exp / cfg.format(norm) / "seed=0"  # as the trainer writes it
        RunDir(where).write_error(FileNotFoundError("cifar10: not found"), **named, variant={})
    assert main([str(tmp_path)]) == 0
    table = (tmp_path / "tables" / f"{exp}.md").read_text()
    counts = "0 / 0 / 0 / 1 / 9 (10)" if status == "running" else "0 / 0 / 1 / 0 / 9 (10)"
    for norm in ("EquiNorm", "BatchNorm"):
        assert f"| {norm} | no complete run |" in table and f"| {counts} |" in table, table
    assert "Traceback" not in capsys.readouterr().err


def test_a_cell_whose_runs_all_failed_is_not_said_to_be_on_its_way(tmp_path, monkeypatch):
    """A cell of failed runs only (out of memory at every seed) was captioned 'no epoch finished
    yet', as if it were training."""
    import equinorm.report.figures as figures
    from equinorm.experiment.identity import dirname
    from equinorm.run.record import RunDir

    exp, cfg = "cifar10_wrn_short", "cifar10-wrn-bn"
    oom, pending = {"schedule.lr": "0.2"}, {"schedule.lr": "0.4"}
    for seed in range(2):
        write_run(tmp_path, exp, cfg, seed, 90.0)
        write_run(tmp_path, exp, cfg, seed, 0.0, status="running", epochs=0, variant=pending)
        named = {"name": exp, "dataset": "cifar10", "arch": "wrn", "norm": "bn", "seed": seed}
        where = tmp_path / "runs" / exp / cfg / dirname(oom) / f"seed={seed}"
        RunDir(where).write_error(RuntimeError("CUDA out of memory"), **named, variant=oom)
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    assert main(["--results", str(tmp_path)]) == 0
    (caption,) = [t.get_text() for t in closed[0].texts if "median over seeds" in t.get_text()]
    caption = caption.replace("\n", " ")
    assert "; no epoch finished yet: cifar10 / wrn / schedule.lr=0.4;" in caption, caption
    assert "every run failed before an epoch ended: cifar10 / wrn / schedule.lr=0.2" in caption
