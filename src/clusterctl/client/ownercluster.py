"""The cluster of `clusterctl demo owner`: its temp dir and topology on free ports, `up` and `down`
through the CLI in their own sessions, and the clean-up of everything started there (on Ctrl-C too:
a process left under the temp dir is killed by pid, with its children).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..errors import ClusterError
from ..runtime.probes import free_port
from .ownerplan import DASK_PORTS, FLAG, OwnerPlan, topology


class Demo:
    """The temp dir, the cluster in it, and the clean-up of everything started there."""

    def __init__(self, plan: OwnerPlan, echo: Callable[[str], None], keep: bool = False):
        self.plan, self.echo, self.keep = plan, echo, keep
        self.root = Path(tempfile.mkdtemp(prefix="clusterctl-owner-demo-"))
        self.flag = self.root / FLAG
        self.config = self.root / "cluster.yaml"
        port = _port(set())
        self.port, self.dashboard = port, _port({port})
        self.text = topology(plan, self.root, self.port, self.dashboard)
        self.config.write_text(self.text)
        self.up_tried = False

    def cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        """`python -m clusterctl ARGS --file cluster.yaml`, in its own session (a Ctrl-C here never
        cuts an `up` or a `down` in half: the demo's clean-up runs `down` itself)."""
        env = {k: v for k, v in os.environ.items() if k != "CLUSTERCTL_CONFIG"}
        proc = subprocess.Popen([sys.executable, "-m", "clusterctl", *args, "--file", str(self.config)], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(proc.args, -9, out, (err or "") + f"\ntimed out after {timeout:g} s")
        except BaseException:  # Ctrl-C while waiting: the child carries on, the clean-up comes next
            try:
                proc.wait(timeout if args[0] == "down" else 30)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                _kill_tree(proc.pid)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def up(self) -> None:
        self.up_tried = True
        res = self.cli("up", timeout=240)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
            raise ClusterError(f"the demo's cluster did not start: {last}")

    def close(self) -> list[str]:
        """`down`, the flag removed, anything still running under the temp dir killed by pid (and said);
        the temp dir removed unless kept. Ctrl-C is ignored meanwhile: the clean-up is not cut short."""
        main = threading.current_thread() is threading.main_thread()
        old = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)] if main else []
        left: list[str] = []
        try:
            self.flag.unlink(missing_ok=True)
            if self.up_tried:
                res = self.cli("down", timeout=120)
                if res.returncode != 0:
                    left.append(f"`clusterctl down` exited {res.returncode}: "
                                + (res.stderr.strip().splitlines() or [""])[-1])
            left += _sweep(self.root)
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)
            for s, handler in zip((signal.SIGINT, signal.SIGTERM), old):
                signal.signal(s, handler)
        return left


def _port(taken: set[int]) -> int:
    for _ in range(100):
        port = free_port()
        if port not in taken and port not in DASK_PORTS:
            return port
    raise ClusterError("no free port on 127.0.0.1 for the demo's cluster")


def processes_under(root: Path) -> list:
    import psutil

    me, found = os.getpid(), []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd, cmd = p.info["cwd"] or "", " ".join(p.info["cmdline"] or [])
        if cwd == str(root) or cwd.startswith(str(root) + os.sep) or str(root) in cmd:
            found.append(p)
    return found


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def _sweep(root: Path) -> list[str]:
    """What still runs under ``root`` gets 5 s to leave, then is killed by pid with its children."""
    import psutil

    procs = processes_under(root)
    if not procs:
        return []
    _, alive = psutil.wait_procs(procs, timeout=5)
    killed = []
    for p in alive:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                killed.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                _kill_tree(p.pid)
        except psutil.NoSuchProcess:
            pass
    return [f"killed, left running after `down`: {k}" for k in killed]
