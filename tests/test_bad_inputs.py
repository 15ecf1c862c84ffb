"""Every bad value a user can type fails before any file is written, in one line naming the key
(issues 13, 27): the real entry point, in-process, over one table of mistakes (the schema's, the
checks' and the constructors' alike); the Python API (``run(cfg)``) over the rows that compose;
and once as a process."""

from __future__ import annotations

import sys

import pytest
import torch

from equinorm.errors import EquinormError
from equinorm.experiment import CONF_DIR
from equinorm.train import app
from tests.conftest import run_cli

BAD = [  # (command line, what the one line must name)
    ("schedule.lr=abc", "schedule.lr=abc"),
    ("schedule.lr=", "schedule.lr="),
    ("schedule.lr=0", "schedule.lr=0"),
    ("schedule.lr=nan", "schedule.lr=nan must be a finite number"),  # it trained, diverged
    ("schedule.lr=1e400", "schedule.lr=inf must be a finite number"),
    ("optim.weight_decay=inf", "optim.weight_decay=inf must be a finite number"),
    ("norm=equi norm.eps=-inf", "norm.eps=-inf must be a finite number"),
    ("schedule=superconvergence schedule.lr_points=[[0,0.1],[30,nan]]", "must be a finite"),
    ("schedule.momentum=-1", "schedule.momentum"),
    ("schedule.gamma=2", "schedule.gamma"),
    ("schedule.milestones=[400]", "schedule.milestones"),
    ("schedule.milestones=[200,100]", "schedule.milestones"),
    ("schedule.milestones=[a]", "schedule.milestones"),
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs"),
    ("schedule.warmup_epochs=300", "schedule.warmup_epochs=300.0 is not shorter than the run"),
    ("debug=smoke schedule.warmup_epochs=300", "than the run (schedule.length=300)"),  # rescaled
    ("schedule=cosine schedule.min_lr=-1", "schedule.min_lr"),
    ("schedule.min_lr=0", "config's schedule (Step); it is a key of schedule=cosine"),
    ("schedule=superconvergence schedule.lr_points=[[0,-1],[30,0.1]]", "schedule.lr_points"),
    ("schedule=superconvergence schedule.lr_points=[[0,a],[30,1]]", "schedule.lr_points"),
    ("schedule=superconvergence schedule.final_momentum=1.5", "schedule.final_momentum"),
    ("schedule=superconvergence schedule.lr=0", "schedule.lr=0"),
    ("schedule=superconvergence schedule.milestones=[5]", "it is a key of schedule=step"),
    ("optim.weight_decay=abc", "optim.weight_decay"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("optim.no_decay_max_rank=-2", "optim.no_decay_max_rank"),
    ("optim.nesterov=perhaps", "optim.nesterov"),
    ("arch.width_mult=abc", "arch.width_mult"),
    ("arch.width_mult=0", "arch.width_mult"),
    ("arch=_common", "arch=_common"),
    ("arch=_shared", "arch=_shared"),
    ("arch=vgg", "arch=vgg"),
    ("arch.name=vgg", "arch.name=vgg: unknown arch 'vgg'; valid archs: "),  # were tracebacks
    ("norm.name=cwn", "norm.name=cwn: unknown norm 'cwn'; valid norms: equi, bn, gn, ws_gn"),
    ("arch.depth=28", "arch.depth is not a key of this config's arch (PreActResNet); it is a key"),
    ("optim.lr=0.1", "it is a key of no optim option (schedule.lr?)"),  # the key is elsewhere
    # group=null was Hydra's ValueError and traceback
    ("norm=null", "norm=null: a norm must be chosen, one of bn, equi, equi_quarter, gn"),
    # a number or boolean for a group: Hydra's ValueError and traceback ("Got int")
    ("norm=3", "norm=3: norm takes an option's name, one of bn, equi, equi_quarter, gn"),
    ("arch=18", "arch=18: arch takes an option's name, one of preact_resnet101"),
    ("debug=true", "debug=true: debug takes an option's name, one of smoke"),
    ("-m norm=bn,1.5", "norm=1.5: norm takes an option's name"),
    ("-m hydra/launcher=3", "hydra/launcher=3: hydra/launcher takes an option's name"),
    ("=3", "=3: an override is key=value, and this one names no key"),
    ("norm=ws_gn norm.eps=-1", "norm.eps must be a finite number >= 0, got -1.0"),  # NaN
    ("dataset.augment.crop_padding=8", "crop_padding=8 must be below the image size of digits (8)"),
    ("norm=bn norm.momentum=-1", "norm.momentum must be in (0, 1], got -1"),  # it trained
    ("norm=wn norm.momentum=0", "norm.momentum must be in (0, 1], got 0"),  # a frozen mean
    ("norm.groups", "norm.groups: an override is key=value"),  # "Error parsing override"
    ("experiment=null", "experiment=null: Hydra drops an optional group with ~experiment"),
    ("arch.name=wrn", "(arch=wrn chooses the arch and its keys; arch.name= keeps those of the one"),
    # a list of options: trained two experiments merged, under a made-up variant
    ("experiment=[cifar10_wrn_short,digits_demo]", "to run each: -m experiment=cifar10_wrn_short,"),
    ("norm=[bn,gn]", "norm=[bn,gn] would merge these options into one config; to run each: -m"),
    ("+experiment=digits_demo", "+experiment=digits_demo: experiment is a group of this config"),
    ("lr=0.1", "lr is not a key of this config (schedule.lr?)"),
    ("train.batchsize=32", "train.batchsize is not a key of this config (train.batch_size or"),
    ("wandb.foo=1", "wandb.foo is not a key of this config (a typo?)"),
    ("mixup.alpha=abc", "mixup.alpha"),
    ("mixup=manifold mixup.alpha=0", "mixup.alpha"),
    ("mixup.loss=mse", "mixup.loss"),
    ("mixup=_common", "mixup=_common"),
    ("mixup=manifold mixup.alpha=-1", "mixup.alpha"),
    ("mixup=manifold mixup.points=[3]", "mixup.points"),
    ("mixup=none mixup.alpha=2", "it is a key of mixup=input and mixup=manifold"),  # issue 27
    ("-m mixup.alpha=1,2", "alpha"),  # the sweep under digits_demo's mixup=none
    ("norm=foo", "norm=foo"),
    ("norm.stat_fraction=abc", "norm.stat_fraction"),
    ("norm.stat_fraction=0", "stat_fraction"),
    ("norm.stat_fraction=1.5", "stat_fraction"),
    ("norm.eps=-1", "eps"),
    ("norm=gn norm.groups=abc", "norm.groups"),
    ("norm=gn norm.groups=0", "norm"),
    ("norm.impl=triton", "norm.impl"),
    ("norm=bn norm.stat_fraction=0.5", "norm.stat_fraction"),
    ("dataset=mnist", "dataset=mnist"),
    ("dataset.loader=foo", "dataset.loader"),
    ("dataset.workers=-1", "dataset.workers"),
    ("dataset.download=maybe", "dataset.download"),
    ("dataset.augment.crop_padding=-1", "dataset.augment.crop_padding"),
    ("dataset.test_fraction=1.5", "dataset.test_fraction=1.5 must hold out 10 to 1,787 of"),  # was
    ("dataset.test_fraction=0", "dataset.test_fraction=0.0 must hold out"),  # sklearn's traceback
    ("dataset.split_seed=-3", "dataset.split_seed=-3 must be in 0..2**32-1"),
    # the training images as the source's options leave them (was: the release's, then a run dir)
    ("dataset.test_fraction=0.5 dataset.val_size=1000", "1..897 (digits trains on 898 images)"),
    ("dataset=svhn dataset.extra=false dataset.val_size=80000", "1..73256 (svhn trains on 73,257"),
    # options their loader does not read: refused before the run directory, not after it (or never)
    ("dataset.augment.random_resized_crop=true", "random_resized_crop needs dataset.loader=torch"),
    ("dataset=imagenet dataset.loader=device", "imagenet does not fit in device memory"),
    ("dataset.augment.eval_resize=36", "eval_resize=36 is read only with dataset.augment.random"),
    ("dataset=imagenet dataset.augment.crop_padding=4", "crop_padding=4 is not read with"),
    ("seed=abc", "seed"),
    ("seed=-1", "seed"),
    ("epochs=0", "epochs"),
    ("epochs=10", "schedule.milestones"),  # the default's milestones 150, 225
    ("experiment=nope", "experiment=nope"),
    ("train.foo=1", "train.foo"),
    ("+train.new_key=1", "train.new_key"),  # added, but nothing reads it (issue 27)
    ("train.batch_size=0", "train.batch_size"),
    ("train.batch_size=abc", "train.batch_size"),
    ("train.devices=0", "train.devices"),
    ("train.threads=0", "train.threads"),
    ("train.precision=fp8", "train.precision"),
    ("train.compile_mode=reduce-overhead", "train.compile_mode"),  # torch's spelling: names _
    ("train.compile_mode=reduce_overhead", "train.compile=true"),  # a mode of nothing compiled
    ("train.progress=maybe", "train.progress"),
    ("train.device=tpu", "train.device"),
    ("train.device=mps", "train.device"),  # a torch device, but not one the suite runs on
    ("wandb.mode=loud", "wandb.mode"),
    ("-m seed=0,abc", "seed"),
    ("-m schedule.lr=0.1,abc", "schedule.lr=abc"),
    ("-m norm=bn,foo", "norm=foo"),
    # a searching sweeper (issue 25): every value it may draw that can be listed is checked
    ("-m hydra/sweeper=optuna schedule.lr=interval(-1,0.3)", "schedule.lr=-1.0"),
    ("-m hydra/sweeper=optuna schedule.lr=tag(log,interval(0.01,0))", "schedule.lr=0"),
    ("-m hydra/sweeper=optuna norm=choice(equi,foo)", "norm=foo"),
    ("-m schedule.lr=interval(0.01,0.3)", "hydra/sweeper=optuna"),  # the grid cannot list it
    ("hparams_search=optuna_lr", "hparams_search=optuna_lr applies to sweeps: add -m"),  # no -m
    ("hydra/launcher=submitit_slurm_gpu", "applies to sweeps: add -m"),  # not on the login node
    ("-m hydra/launcher=joblib", "not one of basic, submitit_local, "),  # was: Could not find
    ("-m hydra/sweeper=ax", "not one of basic, equinorm, optuna (a plugin of Hydra's? pip install"),
    ("hydra.mode=MULTIRUN norm=bn,foo", "norm=foo is not one of"),  # Hydra's other -m
    ("experiment=digits_demo schedule=cosine", "digits_demo sets schedule.milestones, a key"),
    ("hydra.run.dir=out", "hydra.run.dir=out: runs are not written there"),  # it made out/ empty
    ("-m --cfg job norm=bn,gn", "-m and --cfg do not go together"),  # Hydra's ValueError
    ("norm=bn,gn", "norm=bn,gn is a sweep: add -m (python -m equinorm.train -m ...)"),
    ("schedule.milestones=5,10", "add -m (python -m equinorm.train -m ...); a list is written "),
    ("seed=range(3)", "seed=range(3) is a sweep: add -m"),  # was: ... requires --multirun
    ("-m --info", "-m and --info do not go together"),
    ("experiment=digits_demo -m seed=0,1", "put -m and the other flags before"),  # 2 usages
    ("-m hparams_search=optuna_lr seed=-1", "seed"),
    ("-m hparams_search=optuna_lr hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 must be"),
    ("-m hparams_search=optuna_lr hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 must be a"),
    ("hparams_search=nope", "hparams_search=nope"),
    ("-m hydra.sweeper.max_batch_size=0", "hydra.sweeper.max_batch_size=0 must be a"),  # assert
    ("-m hydra.sweeper.max_batch_size=abc", "hydra.sweeper.max_batch_size='abc' must be"),
    ("-m hydra/launcher=submitit_local hydra.launcher.tasks_per_node=0", "tasks_per_node=0 must"),
    ("-m hydra/launcher=submitit_local hydra.launcher.nodes=2", "submitit_local runs on this"),
    ("-m hydra/launcher=submitit_local hydra.launcher.gpus_per_node=64", "node=64 exceeds the"),
    ("-m hydra/launcher=submitit_slurm_cpu hydra.launcher.cpus_per_task=-1", "task=-1 must"),
    ("-m hydra/launcher=submitit_slurm_gpu hydra.launcher.gpus_per_node=-1", "an integer >= 0"),
    ("-m hydra/launcher=submitit_slurm_gpu hydra.launcher.tasks_per_node=2", "node=2: each of"),
    ("name=foo/bar", "name='foo/bar'"),  # issue 24: runs the report would not find
    ("name=../..", "name='../..'"),  # issue 24: outside results_dir
    ("name=-x", "name='-x'"),  # trained: 'equinorm-report --experiment -x' then read an option
    # the top-level keys had no schema: a TypeError's traceback, or seed=true trained 'seed=True'
    ("name=null", "name=null: field 'name' is not Optional"),
    ("results_dir=null", "results_dir=null: field 'results_dir' is not Optional"),
    ("seed=true", "seed=true: Value 'True' of type 'bool' could not be converted to Integer"),
    # filed and reported among another experiment's runs, named against another config
    ("experiment=digits_demo name=cifar10_wrn_short", "experiment=digits_demo is named cifar10_"),
    ("-m experiment=digits_demo name=default", "would go among the runs without an experiment"),
    # the trainer's keys: a value typed was replaced without a word, the run written elsewhere
    ("run_dir=/scratch/mine", "run_dir=/scratch/mine: a run's directory is named by the trainer"),
    ("variant=lr0.05", "variant=lr0.05: a run's variant is named by the trainer"),
    ("results_dir=résultats", "quote it"),  # issue 24: Hydra's lexer reads ASCII unquoted
    # Hydra's parser named a token alone: "mismatched input '=' expecting <EOF>"
    ("results_dir=/data/lr=0.1", "/lr=0.1: Hydra cannot read it (mismatched input '=' expecting"),
    ("results_dir=/data/lr=0.1", """a value holding '=' is quoted: 'results_dir="/data/lr=0.1"'"""),
    ("seed=[1,2", "seed=[1,2: Hydra cannot read it (no viable alternative at input '[1,2')"),
    ("schedule.lr=${oops}", "error: schedule.lr=${oops}: Interpolation key 'oops' not found"),
    ("-m hydra.sweep.dir=${oops}", "error: hydra.sweep.dir: Interpolation key 'oops' not"),
    ("-m seed=0,1 optim.weight_decay=${oc.env:NO_SUCH_VAR_42}", "decay: Environment variable"),
    # each job ran in sweeps/<time>/: results_dir=rel put its runs there, and the tally, reading
    # ./rel/runs, said "2 stopped"
    ("-m hydra.job.chdir=true seed=0,1", "hydra.job.chdir=true: each job of a sweep"),
    # Hydra warned that the search path was not available, then failed in three lines
    ("--config-dir /nonexistent experiment=mine", "--config-dir /nonexistent: no such directory"),
    ("--config-name cifar10_wrn_short", "chosen with experiment=cifar10_wrn_short"),  # 8 lines
    ("nrom=bn", "nrom is not a key of this config (norm?)"),  # it was "(a typo?)"
    ("shedule=step", "shedule is not a key of this config (schedule?)"),
    ("~norm", "~norm: a norm must be chosen, one of bn, equi"),  # "Key 'norm' is not in struct"
    # Optuna's default direction: the study minimized accuracy, and named the worst lr its best
    ("-m hydra/sweeper=optuna schedule.lr=interval(0.01,1)", "direction=minimize: each job"),
    ("-m hparams_search=optuna_lr hydra.sweeper.direction=minimize", "add hydra.sweeper.direct"),
    ("-m hparams_search=optuna_lr hydra.sweeper.direction=[maximize,minimize]", "=maximize,mini"),
    # a study storage it cannot open: SQLAlchemy's traceback once the sweep had begun
    ("-m hparams_search=optuna_lr hydra.sweeper.storage=sqlite:////no/such/st.db", "its folder"),
    ("-m hparams_search=optuna_lr hydra.sweeper.storage=study.db", "not a database URL"),
    # --config-path skipped every check: a sweep's bad value was Hydra's 8 lines after sweeps/
    (f"-m --config-path {CONF_DIR} norm=equi,bn norm.stat_fraction=2", "stat_fraction must be"),
    ("-cp myconf", "--config-path myconf: not a folder holding train.yaml"),  # Hydra: 4 lines
    ("--experimental-rerun x/config.pickle", "no .hydra/config.pickle"),  # Hydra: a traceback
    # Hydra: "Sweeping over Hydra's configuration is not supported", in 3 lines and exit 1
    ("-m hydra.sweeper.params.seed=range(2)", "not a sweep; sweep seed itself: -m seed=range(2)"),
    ("-m hydra.verbose=true,false", "hydra.verbose=true,false: a key of Hydra's own takes one"),
    # Hydra: "Expecting one subcommand", "No completion plugin for 'tcsh'", in tracebacks
    ("-sc", "--shell-completion (-sc) takes one of install=, uninstall= or query="),
    ("-sc install=tcsh", "-sc install=tcsh: Hydra completes bash, fish, zsh"),
    ("-sc install", "-sc install=: Hydra completes bash, fish, zsh"),  # a ValueError of ours
    ("--resolve norm=bn", "--resolve resolves the config --cfg shows: add --cfg job"),
    ("-p norm norm=bn", "--package norm picks what --cfg shows: add --cfg job"),  # Hydra trained
    # Hydra: "Only one of --run, --multirun, --cfg, --info and --shell_completion", a traceback
    ("-r -m norm=bn,gn", "-r and -m do not go together: one of -r (one job, the default), -m,"),
    ("-r --cfg job", "-r and --cfg do not go together"),
    ("--cfg job --info", "--cfg and --info do not go together"),
]


@pytest.mark.parametrize(("line", "names"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_exit_2_and_no_file(line, names, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["equinorm-train", *line.split(), f"results_dir={tmp_path / 'results'}"]
    monkeypatch.setattr(sys, "argv", argv)

    def hydra_main():  # past the preflight nothing may run: a hole would train here
        raise AssertionError(f"{line} passed the preflight")

    monkeypatch.setattr(app, "hydra_main", hydra_main)
    with pytest.raises(SystemExit) as stop:
        app.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equinorm: error: "), err
    assert names in err, err
    assert not any(tmp_path.iterdir()), list(tmp_path.rglob("*"))  # nothing written anywhere


def test_tab_completion_is_the_console_script_s_and_python_m_says_so(monkeypatch, capsys):
    """``python -m equinorm.train -sc install=bash`` installed a completion for ``python
    <script>.py``, which completes nothing here; the console script's completes the config."""
    monkeypatch.setattr(sys, "argv", ["/x/equinorm/train/__main__.py", "-sc", "install=bash"])
    with pytest.raises(SystemExit) as stop:
        app.main()
    assert stop.value.code == 2
    assert 'console script\'s: eval "$(equinorm-train -sc install=bash)"' in capsys.readouterr().err
    line = "equinorm-train experiment=digits_demo norm="
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    monkeypatch.setattr(sys, "argv", ["equinorm-train", "-sc", "query=bash"])
    app.main()
    assert "norm=bn norm=equi" in capsys.readouterr().out


def test_hydra_mode_multirun_is_checked_as_a_sweep():
    from equinorm.experiment.command import preflight

    checked = []
    assert preflight(["hydra.mode=MULTIRUN", "norm=bn,gn", "seed=0"], checked.append) is None
    assert [cfg.norm.name for cfg in checked] == ["bn", "gn"]  # it was "Ambiguous value"


def test_an_unresolvable_results_dir_is_named_not_hydras_dir_of_it(monkeypatch):
    """It was "hydra.sweep.dir: KeyError raised while resolving interpolation: ...", a key the
    user never typed."""
    from equinorm.experiment.command import preflight

    monkeypatch.delenv("NO_SUCH_VAR_42", raising=False)
    line = preflight(["-m", "seed=0,1", "results_dir=${oc.env:NO_SUCH_VAR_42}/x"], print)
    assert line == "results_dir: Environment variable 'NO_SUCH_VAR_42' not found", line


def test_the_command_line_says_it_in_one_line_and_writes_nothing(tmp_path):
    proc = run_cli("-m", "schedule.lr=0.1,abc", f"results_dir={tmp_path / 'r'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "equinorm: error: schedule.lr=abc: Value 'abc' of type 'str' could not be converted to "
        "Float"
    ]
    assert not any(tmp_path.iterdir())


def _main(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["equinorm-train", *argv])
    with pytest.raises(SystemExit) as stop:
        app.main()
    return stop.value.code, capsys.readouterr().err


def test_a_sweep_under_torchrun_is_one_line(tmp_path, monkeypatch, capsys):
    """Each torchrun process ran the whole sweep, and the second job's process group hung in its
    first barrier for good (`torchrun --nproc_per_node=2 -m equinorm.train -m ...`)."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # what torchrun gives its processes
    monkeypatch.setattr(app, "hydra_main", lambda: pytest.fail("passed the preflight"))
    monkeypatch.chdir(tmp_path)
    argv = ["-m", "experiment=digits_demo", "norm=equi,bn", f"results_dir={tmp_path / 'r'}"]
    code, err = _main(argv, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "-m under torchrun" in err and "hydra.launcher.tasks_per_node=N" in err, err
    assert not any(tmp_path.iterdir())
    monkeypatch.setattr(app, "hydra_main", lambda: sys.exit(0))
    assert _main(argv[1:2], monkeypatch, capsys)[0] == 0  # one run under torchrun: its use


def test_a_results_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    code, err = _main([f"results_dir={tmp_path / 'file' / 'r'}"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert (
        err
        == f"equinorm: error: results_dir={tmp_path}/file/r: {tmp_path}/file is not a directory\n"
    )


def test_a_results_dir_under_an_unexpanded_tilde_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it made a folder named '~' here ('rm -rf ~' removes home)
    monkeypatch.setenv("HOME", "/home/u")
    lines = ["results_dir=~/runs", 'results_dir="~/runs"', '-m results_dir="~/runs" seed=0,1']
    for argv in (line.split() for line in lines):  # as zsh passes it; quoted, as Hydra asked
        code, err = _main(argv, monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "write the path: results_dir=/home/u/runs" in err
    assert not any(tmp_path.iterdir())


def test_an_empty_results_dir_is_one_line(tmp_path, monkeypatch, capsys):
    """results_dir=$OUT with OUT unset: runs/ was written into the working directory."""
    monkeypatch.chdir(tmp_path)
    smoke = ["experiment=digits_demo", "debug=smoke", "norm=bn"]  # seconds, where it trained
    for argv in ([*smoke, "results_dir="], ["-m", *smoke, "results_dir=", "seed=0,1"]):
        code, err = _main(argv, monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "results_dir= is empty (an unset shell variable?); results_dir=. writes" in err
    assert not any(tmp_path.iterdir())


def test_a_full_disk_while_training_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno

    from equinorm.run.record import RunDir

    def full(self, cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.config_path))

    monkeypatch.setattr(RunDir, "write_config", full)
    monkeypatch.chdir(tmp_path)
    argv = ["experiment=digits_demo", "debug=smoke", "norm=bn", f"results_dir={tmp_path}"]
    code, err = _main(argv, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("equinorm: error: No space left on device: ") and "config.yaml" in err


def test_a_report_that_cannot_be_written_names_out(tmp_path, capsys):
    from equinorm.report.cli import main as report
    from tests.conftest import write_run

    write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", 0, 90.0)
    (tmp_path / "file").write_text("")
    assert report(["--results", str(tmp_path), "--out", str(tmp_path / "file" / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out DIR" in err and str(tmp_path / "file") in err


NUMBERS = [  # (command, option, bound): each was a traceback (or a negative GPU-hours plan)
    ("report", "--width=-1", "in (2, 100]"),  # matplotlib's ValueError
    ("report", "--width=1", "in (2, 100]"),  # "1 column"? panels a few pixels wide, cut legends
    ("report", "--target=150", "in (0, 100]"),
    ("reproduce", "--tflops=0", "> 0"),  # ZeroDivisionError
    ("reproduce", "--nproc=0", ">= 1"),
    ("tune", "--span=1", "> 1"),
    ("tune", "--points=0", ">= 1"),
    ("tune", "--val-size=0", ">= 1"),  # "no split": it chose on 10% of the training set
]


@pytest.mark.parametrize(("command", "option", "bound"), NUMBERS, ids=[n[1] for n in NUMBERS])
def test_a_number_out_of_range_is_argparse_s_line_not_a_traceback(command, option, bound, capsys):
    from equinorm.launch import reproduce, tune
    from equinorm.report import cli

    argv = {
        "report": ["--results", "nowhere", option],
        "reproduce": ["short", "--plan", option],
        "tune": ["experiment=digits_demo", "--plan", option],
    }[command]
    with pytest.raises(SystemExit) as stop:
        {"report": cli, "reproduce": reproduce, "tune": tune}[command].main(argv)
    assert stop.value.code == 2
    name, value = option.split("=")
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"{name}: {value} must be {bound}")


API = [  # rows of the table whose config composes: the Python API refuses them too
    (line, names)
    for line, names in BAD
    if line
    in (
        "norm.stat_fraction=0",
        "seed=-1",
        "train.batch_size=0",
        "arch.width_mult=0",
        "epochs=10",
        "mixup=manifold mixup.alpha=-1",
        "norm=gn norm.groups=0",
    )
]


@pytest.mark.parametrize(("line", "names"), API, ids=[a[0] for a in API])
def test_the_python_api_refuses_what_the_command_line_refuses(line, names, tmp_path):
    from equinorm.errors import ConfigError
    from equinorm.train.run import run
    from tests.conftest import compose_cfg

    cfg = compose_cfg("train.max_train_batches=1", *line.split(), results=tmp_path)
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        run(cfg)
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_cuda_index_past_the_machine_s_devices_is_one_line(monkeypatch):
    """``train.device=cuda:2`` on a 2-GPU machine: one line naming the devices there (torch's
    "invalid device ordinal" came from inside the first CUDA call)."""
    from equinorm.experiment.checks import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(EquinormError, match=r"^train.device=cuda:2 but this machine has 2 CUDA "):
        device("cuda:2")


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("norm=null", "norm=null: a norm must be chosen, one of bn, "),
        ("norm=3", "norm=3: norm takes an option's name, one of bn, "),  # Hydra's ValueError too
        ("--bogus", "--bogus is not an override (key=value)"),  # 'LexerNoViableAltException'
    ],
)
@pytest.mark.parametrize("command", ["tune", "reproduce"])
def test_a_bad_group_value_is_one_line_for_every_composer(command, override, says, capsys):
    """norm=null was Hydra's ValueError: a traceback from equinorm-tune and make plan."""
    from equinorm.launch import reproduce, tune

    argv = {
        "tune": ["experiment=digits_demo", "--plan", "--", override],
        "reproduce": ["short", "--plan", "--", override],
    }[command]
    assert {"tune": tune, "reproduce": reproduce}[command].main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_the_quoting_fix_keeps_a_value_with_a_space_whole():
    """'results_dir=résultats ü' was told to quote "résultats", which would drop " ü"."""
    from equinorm.experiment.command import preflight

    line = preflight(["results_dir=résultats ü"], lambda cfg: None)
    assert line.endswith("""quote it: 'results_dir="résultats ü"'"""), line
    assert preflight(['results_dir="résultats ü"'], lambda cfg: None) is None  # the fix works
