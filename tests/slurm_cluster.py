"""A real single-node SLURM cluster on localhost, for the launcher's tests and the RESULTS demo.

:class:`LocalCluster` writes a ``slurm.conf`` into its own folder (state, spool, logs, pid files, a munge
socket of its own, free ports), starts ``munged``, ``slurmctld`` and ``slurmd`` (one node, ``localhost``,
2 CPUs, ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres``) and stops exactly the processes it
started. Clients find it through ``SLURM_CONF``, which :meth:`LocalCluster.environ` gives.
:func:`why_not` says in one line why a cluster cannot start here (not root, SLURM or munge not installed).

``python tests/slurm_cluster.py start DIR`` starts one and prints ``export SLURM_CONF=...``;
``python tests/slurm_cluster.py stop DIR`` stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def why_not() -> str | None:
    """``None`` when a local cluster can start here, else why not (one line)."""
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd runs jobs as their user)"
    missing = [d for d in (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel") if shutil.which(d) is None]
    missing = [m for m in missing if not Path("/usr/sbin", m).exists()]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge"
    if not Path("/etc/munge/munge.key").exists():
        return "no munge key (/etc/munge/munge.key): reinstall munge"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalCluster:
    """A 2-CPU localhost SLURM cluster whose every file lives under ``root``."""

    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge.sock"

    def environ(self) -> dict[str, str]:
        """Environment for SLURM clients (sbatch, squeue, scontrol) to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        ctld, slurmd = _free_port(), _free_port()
        self.conf.write_text(
            f"""ClusterName=localssl
SlurmctldHost=localhost
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=20
MinJobAge=3600
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
MessageTimeout=30
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        )

    def _pid(self, name: str) -> int | None:
        path = self.root / f"{name}.pid"
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the three daemons and wait until the node is idle; RuntimeError (one line) if it does not come."""
        self._write_conf()
        env = {**os.environ, **self.environ()}
        r = self.root
        subprocess.run(
            [
                _daemon("munged"),
                "--force",
                f"--socket={self.socket}",
                f"--pid-file={r}/munged.pid",
                f"--log-file={r}/log/munged.log",
                f"--seed-file={r}/munged.seed",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run([_daemon("slurmctld"), "-f", str(self.conf), "-i"], check=True, env=env, capture_output=True)
        subprocess.run(
            [_daemon("slurmd"), "-f", str(self.conf), "-N", "localhost"], check=True, env=env, capture_output=True
        )
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True, check=False
            )
            state = (out.stdout or out.stderr).strip()
            if state.startswith("idle"):
                return
            time.sleep(0.5)
        log = (
            (r / "log" / "slurmd.log").read_text().strip().splitlines()[-1:]
            if (r / "log" / "slurmd.log").exists()
            else []
        )
        self.stop()
        raise RuntimeError(f"the local SLURM node did not become idle in {timeout_s:g} s (sinfo: {state!r}; {log})")

    def stop(self) -> None:
        """Stop the daemons this cluster started (by the pids in its own pid files), newest first."""
        for name in reversed(DAEMONS):
            pid = self._pid(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    what, folder = sys.argv[1], Path(sys.argv[2])
    cluster = LocalCluster(folder)
    if what == "start":
        reason = why_not()
        if reason:
            sys.exit(reason)
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
