"""A one-node Ray cluster and a one-node Slurm cluster on 127.0.0.1, started and stopped by the tests (no test here).

Each daemon is started in the foreground as a child of the test (``ray start --block``, ``munged -F``,
``slurmctld -D``, ``slurmd -D``) and stopped by its own PID. :func:`require` skips a test whose
cluster cannot start here, and fails it under ``CI=true``, naming why: CI must run it
(``make test`` installs Ray with the dev extra and Slurm with ``make slurm-for-tests``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest


def require(ok: bool, reason: str) -> None:
    """Go on when ``ok``; else fail under CI (these tests must run there), skip elsewhere, naming ``reason``."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def ray_executable() -> str | None:
    candidate = os.path.join(os.path.dirname(sys.executable), "ray")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("ray")


class LocalRay:
    """``ray start --head --block`` on 127.0.0.1 with ``num_cpus`` CPUs and no GPU; ``address`` to connect to."""

    def __init__(self, num_cpus: int = 2, env: dict | None = None):
        self.num_cpus, self.env = num_cpus, env
        self.folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = None

    def __enter__(self) -> "LocalRay":
        command = [ray_executable(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                   "--num-cpus", str(self.num_cpus), "--num-gpus", "0", "--include-dashboard", "false",
                   "--disable-usage-stats", "--temp-dir", self.folder, "--object-store-memory", str(200 * 1024**2),
                   "--dashboard-agent-listen-port", str(free_port()), "--min-worker-port", "20000", "--max-worker-port", "20999"]
        self.log = os.path.join(self.folder, "ray-start.log")
        self.process = subprocess.Popen(command, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{_tail(self.log)}")
            probe = subprocess.run([ray_executable(), "status", "--address", self.address], capture_output=True, text=True,
                                   env=self.env, timeout=60)
            if probe.returncode == 0 and "CPU" in probe.stdout:
                return self
            time.sleep(1)
        self.__exit__()
        raise RuntimeError(f"the Ray head did not answer within 90 s:\n{_tail(self.log)}")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            _stop(self.process, timeout=30)  # `ray start --block` stops the processes it started when it ends
        shutil.rmtree(self.folder, ignore_errors=True)


def slurm_missing() -> str | None:
    """Why a local Slurm cluster cannot start here (None: it can)."""
    missing = [name for name in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "srun")
               if shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        return (f"Slurm/munge not installed ({', '.join(missing)} missing): `make slurm-for-tests` installs Debian's "
                "slurm-wlm and munge")
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs, and this is not root"
    return None


class LocalSlurm:
    """munged, slurmctld and slurmd on 127.0.0.1 with a temporary ``slurm.conf`` and munge key.

    ``env`` is the environment that reaches the cluster (``SLURM_CONF`` set); ``partition`` its one partition.
    """

    partition = "debug"

    def __init__(self, cpus: int | None = None, memory_mb: int = 4000):
        self.folder = tempfile.mkdtemp(prefix="slurm", dir="/tmp")
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.node = socket.gethostname().split(".")[0]
        self.processes: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": os.path.join(self.folder, "slurm.conf"),
                    "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}

    def _path(self, *parts) -> str:
        return os.path.join(self.folder, *parts)

    def _write_config(self) -> None:
        os.chmod(self.folder, 0o755)  # mkdtemp's 0700: munged refuses a socket in a folder others cannot enter
        for sub in ("munge", "state", "spool", "log"):
            os.makedirs(self._path(sub), exist_ok=True)
        os.chmod(self._path("munge"), 0o755)  # munged wants a socket folder others may enter
        with open(self._path("munge", "munge.key"), "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(self._path("munge", "munge.key"), 0o600)
        ctld_port, node_port = free_port(), free_port()
        config = f"""
ClusterName=unirestest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
AuthType=auth/munge
AuthInfo=socket={self._path("munge", "munge.sock")}
CredType=cred/munge
StateSaveLocation={self._path("state")}
SlurmdSpoolDir={self._path("spool")}
SlurmctldPidFile={self._path("slurmctld.pid")}
SlurmdPidFile={self._path("slurmd.pid")}
SlurmctldLogFile={self._path("log", "slurmctld.log")}
SlurmdLogFile={self._path("log", "slurmd.log")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.env["SLURM_CONF"], "w") as f:
            f.write(config.lstrip())

    def _start(self, command: list[str], log: str) -> None:
        process = subprocess.Popen(command, stdout=open(self._path("log", log), "w"), stderr=subprocess.STDOUT,
                                   env=self.env, start_new_session=True)
        self.processes.append(process)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{_tail(self._path('log', name))}" for name in sorted(os.listdir(self._path("log"))))

    def __enter__(self) -> "LocalSlurm":
        self._write_config()
        munge = self._path("munge")
        self._start(["munged", "-F", f"--key-file={munge}/munge.key", f"--socket={munge}/munge.sock", f"--pid-file={munge}/munged.pid",
                     f"--log-file={munge}/munged.log", f"--seed-file={munge}/seed"], "munged.out")
        deadline = time.monotonic() + 15
        while not os.path.exists(f"{munge}/munge.sock") and time.monotonic() < deadline:
            time.sleep(0.2)
        self._start(["slurmctld", "-D", "-i"], "slurmctld.out")
        deadline = time.monotonic() + 30  # slurmd registers with a controller that answers
        while time.monotonic() < deadline and self.processes[-1].poll() is None:
            if subprocess.run(["sinfo", "--noheader"], capture_output=True, env=self.env).returncode == 0:
                break
            time.sleep(0.2)
        self._start(["slurmd", "-D", "-N", self.node], "slurmd.out")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            state = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, env=self.env)
            if state.returncode == 0 and state.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(1)
        logs = self.logs()
        self.__exit__()
        raise RuntimeError(f"the local Slurm cluster did not come up:\n{logs}")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True, env=self.env)
            if queue.returncode == 0 and not queue.stdout.strip():
                return True
            time.sleep(1)
        return False

    def __exit__(self, *exc) -> None:
        if self.processes and self.processes[-1].poll() is None:  # cancel what a failed test left queued or running
            queue = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, env=self.env)
            jobs = queue.stdout.split() if queue.returncode == 0 else []
            if jobs:
                subprocess.run(["scancel", *jobs], capture_output=True, env=self.env)
                self.wait_idle(20)
        for process in reversed(self.processes):  # slurmd, slurmctld, munged: each by its own PID
            _stop(process)
        shutil.rmtree(self.folder, ignore_errors=True)
