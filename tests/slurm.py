"""A single-node Slurm on localhost for the tests: munged, slurmctld and slurmd with a generated slurm.conf.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them). Everything lives in one private
directory (key, sockets, state, logs) and the daemons listen on free ports of 127.0.0.1, so a
machine's own Slurm, if any, is not touched. ``start`` returns None when it works, else the
reason it could not start (the fixture skips with it: reported, never silent).
Loaded by a fixture in ``tests/conftest.py`` (tests never import each other); ``.ci/slurm`` runs
it as a script (``python tests/slurm.py start|stop DIR``) to start one for the whole CI run.
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

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
CONF = """\
ClusterName=hepsieve-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024
    return 4000


class SingleNodeSlurm:
    """munged + slurmctld + slurmd on 127.0.0.1, configured in ``root``; ``env`` points clients at it."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}

    def _run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=os.environ | self.env
        )

    def idle(self) -> bool:
        """Return whether this directory's Slurm is up and its node idle (ready for jobs)."""
        if not self.conf.is_file() or shutil.which("sinfo") is None:
            return False
        return self._run("sinfo", "-h", "-N", "-o", "%T", timeout=10).stdout.strip().startswith("idle")

    def start(self) -> str | None:
        """Start the daemons; return None once the node is idle, else why Slurm cannot run here."""
        if self.idle():  # started before (by .ci/slurm): reuse it
            return None
        missing = [d for d in DAEMONS if shutil.which(d) is None]
        if missing:
            return f"Slurm cannot start: {', '.join(missing)} not found (apt-get install slurm-wlm munge)"
        if os.geteuid() != 0:
            return "Slurm cannot start: slurmd must run as root to start jobs"
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged wants its socket's directory searchable
        self.conf.write_text(
            CONF.format(
                root=self.root,
                ctld_port=_free_port(),
                d_port=_free_port(),
                user="root",
                cpus=os.cpu_count() or 1,
                memory_mb=_memory_mb(),
            )
        )
        return self._start_munge() or self._start_slurm()

    def _start_munge(self) -> str | None:
        key = self.root / "munge.key"
        key.unlink(missing_ok=True)  # a key left by an earlier start in DIR (its munged is stopped)
        made = self._run("mungekey", "--create", f"--keyfile={key}")
        if made.returncode:
            return f"Slurm cannot start: mungekey failed: {made.stderr.strip()}"
        key.chmod(0o600)
        started = self._run(
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={self.root}/munge.sock",
            f"--pid-file={self.root}/munged.pid",
            f"--log-file={self.root}/munged.log",
            f"--seed-file={self.root}/munged.seed",
        )
        if started.returncode:
            why = (started.stderr or self._tail("munged.log")).strip()
            return f"Slurm cannot start: munged failed: {why}"
        return None

    def _start_slurm(self) -> str | None:
        conf = str(self.conf)
        for argv in (("slurmctld", "-f", conf), ("slurmd", "-f", conf, "-N", "localhost")):
            started = self._run(*argv)
            if started.returncode:
                log = "slurmctld.log" if argv[0] == "slurmctld" else "slurmd.log"
                return f"Slurm cannot start: {argv[0]} failed: {started.stderr.strip()} {self._tail(log)}"
        for _ in range(120):
            state = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()
            if state.startswith("idle"):
                return None
            time.sleep(0.5)
        return (
            f"Slurm cannot start: the node did not become idle in 60 s (sinfo: {state!r}); "
            f"{self._tail('slurmd.log')}"
        )

    def _tail(self, name: str) -> str:
        path = self.root / name
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        return f"{name}: {lines[-1]}" if lines else ""

    def jobs(self) -> list[str]:
        """Return the ids of the jobs running or pending."""
        return self._run("squeue", "-h", "-o", "%i").stdout.split()

    def cancel(self, job_id: str) -> None:
        """Cancel (kill) one job, as ``scancel`` does."""
        self._run("scancel", job_id)

    def stop(self) -> None:
        """Stop slurmd, slurmctld and munged (by their pid files)."""
        if self.conf.is_file() and shutil.which("scancel"):
            self._run("scancel", "--user=root")
        for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            pid_file = self.root / name
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            for _ in range(100):  # until it has exited
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


def main(argv: list[str]) -> int:
    """``start DIR``: start (or reuse) the Slurm of DIR, print its SLURM_CONF; ``stop DIR``: stop it."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        sys.stderr.write("usage: python tests/slurm.py start|stop DIR\n")
        return 2
    cluster = SingleNodeSlurm(Path(argv[1]).resolve())
    if argv[0] == "stop":
        cluster.stop()
        return 0
    cluster.root.mkdir(parents=True, exist_ok=True)
    reason = cluster.start()
    if reason:
        cluster.stop()
        sys.stderr.write(reason + "\n")
        return 1
    sys.stdout.write(f"SLURM_CONF={cluster.conf}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
