"""A real single-node SLURM cluster on this machine, for the ``slurm`` tests (``make test-slurm``).

Debian's packages (slurmctld, slurmd, slurmdbd, slurm-client, munge, mariadb-server; installed
with apt as root when missing), configured for a machine without systemd or cgroups:
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, ``JobAcctGatherType=none``,
``select/cons_tres`` with ``CR_Core_Memory`` and accounting through slurmdbd + MariaDB (submitit
polls ``sacct``; without accounting its launcher waits forever). Every daemon runs in the
foreground under its own session, its PID kept, and is stopped by that PID; all state lives in one
directory. Clients find the cluster through ``SLURM_CONF`` (:meth:`Cluster.env`).

    python -m tools.slurm_cluster up      # bring it up and leave it running (prints SLURM_CONF)
    python -m tools.slurm_cluster down    # stop what `up` started
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server"]
STATE = Path(os.environ.get("EQUINORM_SLURM_STATE", "/tmp/equinorm-slurm"))
PARTITION = "debug"
DB_PASS = "equinorm"


class ClusterError(RuntimeError):
    pass


def _run(*cmd: str, check: bool = True, env: dict | None = None, **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if check and proc.returncode:
        raise ClusterError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def available() -> str | None:
    """Why this machine cannot host the cluster, or None."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (the daemons run as root, the packages come from apt)"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "needs Debian's apt to install SLURM"
    return None


def install() -> None:
    """apt-get install the packages that are missing (as root)."""
    missing = [
        p
        for p in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch")
        if not shutil.which(p) and not Path(f"/usr/sbin/{p}").exists()
    ]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get", "update", "-qq", env=env)
    _run("apt-get", "install", "-y", "-qq", *PACKAGES, env=env)


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    return int(total_kb / 1024 * 0.8)  # leave the rest to the daemons and the test process


class Cluster:
    """Bring the daemons up (:meth:`start`) and down (:meth:`stop`), by PID."""

    def __init__(self, state: Path = STATE) -> None:
        self.state = Path(state)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = _memory_mb()
        self.conf = self.state / "slurm.conf"
        self.pids: dict[str, int] = {}

    # -- configuration -------------------------------------------------------------------------
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_configs(self) -> None:
        s = self.state
        for sub in ("ctld", "d", "log", "db", "run"):
            (s / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=equinorm",
                    f"SlurmctldHost={self.host}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "SlurmctldPort=16817",
                    "SlurmdPort=16818",
                    "AuthType=auth/munge",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/backfill",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "ReturnToService=2",
                    "JobRequeue=1",
                    "KillWait=30",
                    "MinJobAge=3600",
                    "AccountingStorageType=accounting_storage/slurmdbd",
                    "AccountingStorageHost=localhost",
                    "AccountingStoragePort=16819",
                    f"StateSaveLocation={s / 'ctld'}",
                    f"SlurmdSpoolDir={s / 'd'}",
                    f"SlurmctldPidFile={s / 'run' / 'slurmctld.pid'}",
                    f"SlurmdPidFile={s / 'run' / 'slurmd.pid'}",
                    f"SlurmctldLogFile={s / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={s / 'log' / 'slurmd.log'}",
                    f"NodeName={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} "
                    "State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (s / "cgroup.conf").unlink(missing_ok=True)  # 22.05 has no "disabled"; none is used
        dbd = s / "slurmdbd.conf"
        dbd.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    "DbdHost=localhost",
                    "DbdPort=16819",
                    "SlurmUser=root",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=localhost",
                    "StorageLoc=equinorm_acct",
                    "StorageUser=slurm",
                    f"StoragePass={DB_PASS}",
                    "StoragePort=3306",
                    f"PidFile={s / 'run' / 'slurmdbd.pid'}",
                    f"LogFile={s / 'log' / 'slurmdbd.log'}",
                    "",
                ]
            )
        )
        dbd.chmod(0o600)

    # -- daemons -------------------------------------------------------------------------------
    def _spawn(self, name: str, *cmd: str) -> None:
        log = open(self.state / "log" / f"{name}.out", "ab")  # noqa: SIM115 -- the daemon's
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env()
        )
        self.pids[name] = proc.pid
        (self.state / "pids.json").write_text(json.dumps(self.pids))

    def _wait(self, what: str, ok, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():
                return
            dead = [n for n, pid in self.pids.items() if not _alive(pid)]
            if dead:
                raise ClusterError(
                    f"{', '.join(dead)} died while waiting for {what}; see {self.state / 'log'}"
                )
            time.sleep(0.5)
        raise ClusterError(f"timed out waiting for {what}; see {self.state / 'log'}")

    def start(self) -> Cluster:
        if self.state.exists():
            Cluster.from_state(self.state).stop()
            shutil.rmtree(self.state)
        self.state.mkdir(parents=True)
        self._write_configs()
        # munge: the key the package made, its socket in the standard place
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        self._spawn("munged", "runuser", "-u", "munge", "--", "munged", "-F", "--force")
        self._wait("munge", lambda: _quiet("munge", "-n"))
        # MariaDB in its own data directory
        db = self.state / "db"
        shutil.chown(db, "mysql", "mysql")
        _run(
            "mariadb-install-db",
            "--user=mysql",
            f"--datadir={db}",
            "--auth-root-authentication-method=socket",
        )
        Path("/run/mysqld").mkdir(exist_ok=True)
        shutil.chown("/run/mysqld", "mysql", "mysql")
        self._spawn(
            "mariadbd",
            "mariadbd",
            "--user=mysql",
            f"--datadir={db}",
            "--socket=/run/mysqld/mysqld.sock",
            "--bind-address=127.0.0.1",
            "--port=3306",
            "--skip-log-bin",
        )
        self._wait("MariaDB", lambda: _quiet("mariadb", "-e", "select 1"))
        _run(
            "mariadb",
            "-e",
            f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASS}'; "
            "GRANT ALL ON equinorm_acct.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;",
        )
        self._spawn("slurmdbd", "slurmdbd", "-D")  # reads slurmdbd.conf beside SLURM_CONF
        env = self.env()
        self._wait("slurmdbd", lambda: _quiet("sacctmgr", "-n", "list", "cluster", env=env))
        _run("sacctmgr", "-i", "add", "cluster", "equinorm", env=env, check=False)
        self._spawn("slurmctld", "slurmctld", "-D", "-i", "-f", str(self.conf))
        self._wait("slurmctld", lambda: _quiet("scontrol", "ping", env=env))
        self._spawn("slurmd", "slurmd", "-D", "-f", str(self.conf))
        self._wait("an idle node", lambda: self.node_state() in ("idle", "mixed", "allocated"))
        return self

    def node_state(self) -> str:
        out = _run("sinfo", "-h", "-N", "-o", "%T", env=self.env(), check=False)
        return out.strip().rstrip("*~#")

    def stop(self) -> None:
        """Cancel what is left in the queue and let its step daemons end, then stop the daemons
        in reverse order (SIGTERM, then SIGKILL), by PID and session."""
        if self.pids and _alive(self.pids.get("slurmctld", -1)):
            env = self.env()
            jobs = _run("squeue", "-h", "-o", "%A", env=env, check=False).split()
            if jobs:
                _run("scancel", *jobs, env=env, check=False)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                steps = _run("scontrol", "listpids", env=env, check=False).splitlines()[1:]
                queued = _run("squeue", "-h", env=env, check=False).strip()
                if not queued and not steps:
                    break
                time.sleep(0.5)
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            if not _alive(pid):
                continue
            _signal_group(pid, signal.SIGTERM)
            end = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.2)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        self.pids = {}
        if (self.state / "pids.json").exists():
            (self.state / "pids.json").write_text("{}")

    @classmethod
    def from_state(cls, state: Path = STATE) -> Cluster:
        cluster = cls(state)
        try:
            cluster.pids = json.loads((Path(state) / "pids.json").read_text())
        except (OSError, ValueError):
            cluster.pids = {}
        return cluster

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _quiet(*cmd: str, env: dict | None = None) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, env=env, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "up"
    if action == "up":
        why = available()
        if why:
            print(f"slurm_cluster: {why}", file=sys.stderr)
            return 1
        install()
        cluster = Cluster().start()
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    if action == "down":
        Cluster.from_state().stop()
        return 0
    print("usage: python -m tools.slurm_cluster up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
