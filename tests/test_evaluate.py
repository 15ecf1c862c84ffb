"""A run's network rebuilt from its record (equinorm.run.trained) and scored again
(equinorm-evaluate): the numbers the run recorded, from model.pt or a checkpoint."""

from __future__ import annotations

import shutil

import pytest
import torch

from equinorm.data.digits import Digits
from equinorm.run.trained import load
from equinorm.train import evaluate as cli
from equinorm.train.build import loaders
from equinorm.train.run import run
from equinorm.train.trainer import Trainer
from tests.conftest import compose_cfg, fabricated, run_dir_of

CPU = torch.device("cpu")
TWO_EPOCHS = [
    "experiment=digits_demo",
    "seed=1",
    "epochs=2",
    "schedule.milestones=[1]",
    "arch.width_mult=0.125",
    "train.equilibrium_stats=false",
    "dataset.val_size=100",
]


def trained_run(tmp_path, norm: str):
    cfg = compose_cfg(*TWO_EPOCHS, f"norm={norm}", results=tmp_path)
    run(cfg)
    return run_dir_of(cfg)


@pytest.mark.parametrize("norm", ["equi", "bn"])
def test_model_pt_scores_exactly_what_the_run_recorded_on_test_and_validation(
    tmp_path, norm, monkeypatch
):
    path = trained_run(tmp_path, norm)
    read = []  # the splits whose arrays are read (True: the training split)
    arrays = Digits.arrays

    def spy(self, train):
        read.append(train)
        return arrays(self, train)

    monkeypatch.setattr(Digits, "arrays", spy)
    scored = cli.evaluate(path, CPU)
    # test; the validation split (labels to hold it out, then its images); no training loader
    assert sorted(read) == [False, True, True]
    trained, scores = scored.trained, scored.scores
    assert trained.weights.name == "model.pt" and trained.epoch == 2 and not trained.model.training
    assert set(scores) == {"test_acc", "test_loss", "val_acc", "val_loss"}
    assert {k: scored.recorded[k] for k in scores} == scores  # bit for bit on the CPU
    # the inputs as the run saw them: standardized for BatchNorm, [0, 1] pixels for EquiNorm
    raw = trained.config.copy()
    raw.dataset.standardize = False
    x01 = next(iter(loaders(raw, CPU).test.iterate(0)))[0]
    seen = next(iter(loaders(trained.config, CPU).test.iterate(0)))[0]
    assert (trained.mean is None) == (norm == "equi") and x01.min() >= 0 and x01.max() <= 1
    torch.testing.assert_close(trained.standardize(x01), seen)


def test_a_fused_equinorm_net_scores_as_the_trained_one_and_the_cli_says_both(tmp_path, capsys):
    path = trained_run(tmp_path, "equi")
    plain = cli.evaluate(path, CPU).scores
    scored = cli.evaluate(path, CPU, fuse=True)
    fused = scored.scores
    capsys.readouterr()  # what training printed
    assert not any(type(m).__name__ == "EquiConv2d" for m in scored.trained.model.modules())
    assert scored.folded > 10  # every conv of the network
    assert fused["test_acc"] == plain["test_acc"] and fused["val_acc"] == plain["val_acc"]
    assert fused["test_loss"] == pytest.approx(plain["test_loss"], rel=1e-5)
    (tmp_path / "wandb" / "run-1" / "files").mkdir(parents=True)  # wandb online keeps a
    (tmp_path / "wandb" / "run-1" / "files" / "config.yaml").write_text("{}")  # config.yaml
    assert cli.main([str(tmp_path), "--fuse"]) == 0
    out = capsys.readouterr().out.strip()
    acc = f"{plain['test_acc']:.2f}"
    assert out.startswith(f"{path}: model.pt (epoch 2, {scored.folded} EquiNorm layers folded); ")
    assert f"; test acc {acc} loss " in out
    assert f"(recorded {acc}, " in out and "; val acc " in out
    assert cli.main([str(path / "model.pt")]) == 0  # a run's file: that run
    assert capsys.readouterr().out.startswith(f"{path}: model.pt (epoch 2); test acc {acc} ")


def test_ctrl_c_while_scoring_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    """A Ctrl-C during a long evaluation ended in a KeyboardInterrupt traceback."""
    good = trained_run(tmp_path, "bn")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Python makes of the terminal's SIGINT

    monkeypatch.setattr(cli, "evaluate", interrupted)
    capsys.readouterr()
    assert cli.main([str(good)]) == 130
    assert capsys.readouterr().err == "equinorm-evaluate: interrupted (Ctrl-C)\n"


def test_an_unfinished_run_is_scored_from_its_checkpoint(tmp_path, monkeypatch):
    def crash(self):
        raise RuntimeError("the node died")

    monkeypatch.setattr(Trainer, "finish", crash)
    cfg = compose_cfg(*TWO_EPOCHS, "norm=equi", results=tmp_path)
    with pytest.raises(RuntimeError):
        run(cfg)
    path = run_dir_of(cfg)
    assert not (path / "model.pt").exists()
    scored = cli.evaluate(path, CPU)
    trained = scored.trained
    assert trained.weights.name == "checkpoint.pt" and (trained.epoch, trained.batch) == (2, 0)
    assert {k: scored.recorded[k] for k in scored.scores} == scored.scores


def test_a_run_that_cannot_be_scored_is_one_line_and_the_others_are_scored(
    tmp_path, capsys, monkeypatch
):
    good = trained_run(tmp_path, "bn")
    empty = good.parent / "seed=7"  # a run that never got weights: its config alone
    empty.mkdir()
    shutil.copy(good / "config.yaml", empty / "config.yaml")
    capsys.readouterr()  # what training printed
    assert cli.main([str(tmp_path / "runs"), str(tmp_path / "nowhere")]) == 1
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith(f"{good}: model.pt (epoch 2)")
    assert err.splitlines() == [
        f"equinorm-evaluate: {empty} has no weights yet (no model.pt, no readable checkpoint)",
        f"equinorm-evaluate: {tmp_path / 'nowhere'}: no run directory there",
    ]
    unkept = good.parent / "seed=8"  # trained with train.checkpoint=false: no weights, by choice
    unkept.mkdir()
    config = (good / "config.yaml").read_text()
    (unkept / "config.yaml").write_text(config.replace("checkpoint: true", "checkpoint: false"))
    with pytest.raises(
        Exception, match=r"seed=8 was trained with train\.checkpoint=false: it kept no"
    ):
        load(unkept)
    weightless = [  # each said "no weights yet": (seed, record, what load says)
        (9, "summary.json", '{"status": "diverged", "diverged_epoch": 1}', r"diverged in epoch 1,"),
        (10, "error.json", '{"error": "dataset.val_size=9: too big"}', r"failed before any chec"),
    ]
    for seed, name, record, says in weightless:
        lost = good.parent / f"seed={seed}"
        lost.mkdir()
        shutil.copy(good / "config.yaml", lost / "config.yaml")
        (lost / name).write_text(record)
        with pytest.raises(Exception, match=rf"seed={seed} {says}"):
            load(lost)
    with pytest.raises(Exception, match="not a run directory"):
        load(tmp_path)
    # its data missing: it failed before it wrote config.yaml, and was 'not a run directory'
    early = good.parent / "seed=11"
    early.mkdir()
    (early / "error.json").write_text('{"error": "cifar10: data_batch_1 not found"}')
    with pytest.raises(Exception, match=r"seed=11 failed before training \(cifar10: data_batch_1"):
        load(early)
    monkeypatch.setenv("HOME", str(tmp_path))  # a path as a user writes it in Python
    assert load(f"~/{good.relative_to(tmp_path)}").epoch == 2
    # a norm whose package is not installed here: its sentence, not a KeyError's quoted repr
    foreign = good.parent.parent / "digits-preact_resnet18-cwn" / "seed=0"
    shutil.copytree(good, foreign)
    config = (foreign / "config.yaml").read_text()
    (foreign / "config.yaml").write_text(config.replace("name: bn", "name: cwn"))
    capsys.readouterr()
    assert cli.main([str(foreign)]) == 1
    assert capsys.readouterr().err == (
        f"equinorm-evaluate: {foreign}: unknown norm 'cwn'; valid norms: equi, bn, gn, ws_gn, wn, "
        "none\n"
    )


def test_datasets_that_moved_are_one_line_and_found_with_data_root(data_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(data_root / "cifar-10-batches-py", data / "cifar-10-batches-py")
    cfg = compose_cfg(
        "experiment=cifar10_wrn_short",
        "norm=bn",
        "debug=smoke",
        *fabricated(data),
        results=tmp_path,
    )
    run(cfg)
    moved = tmp_path / "moved"
    data.rename(moved)
    capsys.readouterr()  # what training printed
    assert cli.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cifar-10-batches-py" in err
    assert err.rstrip().endswith("(--data-root DIR: where they are now)")
    scored = cli.evaluate(run_dir_of(cfg), CPU, data_root=str(moved))
    assert {k: scored.recorded[k] for k in scored.scores} == scored.scores
    assert scored.trained.config.dataset.root == str(moved)


def test_a_device_that_is_not_there_names_the_option(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["somewhere", "--device", "gpu"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "equinorm-evaluate: error: --device='gpu' is not a device the suite runs on "
        "(auto, cpu, cuda, cuda:<n>)"
    )


def test_it_scores_on_the_threads_the_trainer_would_use(tmp_path, monkeypatch):
    """On a SLURM task given 2 of a node's 8 CPUs it ran torch's default threads, the node's:
    more threads than cores, which collapse (equinorm.train.cpus)."""
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    threads = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        cli.main([str(tmp_path)])  # nothing to score there: only the threads matter
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
