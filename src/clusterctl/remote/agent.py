"""The lifeline on a remote host: owns one Dask process and never outlives its ssh session.

Started over SSH by the supervisor (see plan/specs.py)::

    python -m clusterctl.remote.agent --grace 10 --cwd .cache/clusterctl/lab --launch worker \
        --env-key OMP_NUM_THREADS --env-key TOKEN -- tls://head:8786 --name a-0

Environment values never go on a command line (``ps`` on either machine would
show them): with ``--env-key`` the first line on stdin is ``{"env": {...}}``
with exactly those keys, read before anything starts.

SSH alone leaves a remote command running when the ``ssh`` client is killed.
The agent closes that gap: it starts the command in its own session, forwards
SIGTERM/SIGINT/SIGHUP to it, and when its stdin reaches EOF (the supervisor
closed the pipe, was killed, or the link dropped) it sends SIGTERM, waits the
grace period, then SIGKILLs the command's whole process group. It exits with
the command's code, so the local ``ssh`` process looks like the command itself.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ..plan.tag import KEEP_ENVIRON, TAG_ENV
from ..runtime.childhandle import UNKNOWN_EXIT, check_nice, popen_priority
from ..runtime.tuning import apply_defaults
from . import forked
from .wire import KILL

POSIX = os.name != "nt"
PREAMBLE_TIMEOUT = 30.0  # seconds to wait for the environment line on stdin
LIFELINE_TIMEOUT = 20.0  # seconds of silence on stdin that mean the head is cut off
PREAMBLE_MAX = 1 << 20


class PreambleError(Exception):
    pass


def _say(msg: str) -> None:
    try:  # stderr is the ssh channel: it may be gone, and that must not stop the cleanup
        print(f"clusterctl.remote.agent[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m clusterctl.remote.agent", description=__doc__.splitlines()[0])
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    p.add_argument("--cwd", default=None, help="directory to create and run in")
    p.add_argument("--tag", default="", help="cluster tag, for `sweep` to find what is left")
    p.add_argument("--launch", choices=("scheduler", "worker"), default=None,
                   help="prefix the command with this host's Dask executable (resolved here)")
    p.add_argument("--no-dashboard-pages", dest="dashboard", action="store_false",
                   help="the worker serves no dashboard pages: its fork server need not import Bokeh")
    p.add_argument("--nice", type=_nice, default=None, metavar="0-19",
                   help="the command's CPU priority (absolute) and, above 0, the idle I/O class; set in the "
                        "command's own process, never the agent's nor its fork server's")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="extra environment (visible in ps: prefer --env-key)")
    p.add_argument("--env-key", action="append", default=[], metavar="K",
                   help='a variable whose value comes in {"env": {...}}, the first line on stdin')
    p.add_argument("--lifeline-timeout", type=float, default=LIFELINE_TIMEOUT, metavar="SECONDS",
                   help="stop the command when stdin stays silent this long: the supervisor beats every "
                        "5 s, so silence is a cut link the kernel has not noticed (0: only EOF counts)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command and not args.launch:
        p.error("nothing to run: give -- COMMAND...")
    return args


def _nice(text: str) -> int:
    try:
        return check_nice(int(text))  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a nice value from 0 to 19") from None


def command(args: argparse.Namespace) -> list[str]:
    if not args.launch:
        return list(args.command)
    from ..plan.resolve import resolve  # resolution runs here, for this host's OS and layout

    launcher = resolve()
    return [*(launcher.scheduler if args.launch == "scheduler" else launcher.worker), *args.command]


def read_preamble(fd: int, keys: list[str], timeout: float = PREAMBLE_TIMEOUT) -> dict[str, str]:
    """The first line on ``fd``: ``{"env": {...}}`` holding exactly ``keys``. Whatever follows
    it is dropped: after the preamble only the pipe's end means anything (the lifeline)."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PreambleError(f"no environment on stdin within {timeout:g} s")
        if POSIX and not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise PreambleError("stdin closed before the environment arrived")
        data += chunk
        if len(data) > PREAMBLE_MAX:
            raise PreambleError("the environment line is too long")
    try:
        env = json.loads(data.split(b"\n", 1)[0])["env"]
    except (ValueError, KeyError, TypeError) as e:
        raise PreambleError(f"the first line on stdin is not {{\"env\": {{...}}}}: {e}") from None
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise PreambleError("the environment must map names to strings")
    if sorted(env) != sorted(keys):
        raise PreambleError(f"expected the keys {' '.join(sorted(keys))}, got {' '.join(sorted(env))}")
    return env


def _watch_stdin(stop: threading.Event, why: list[str], timeout: float, kill: threading.Event | None = None) -> None:
    """The lifeline: EOF (the supervisor, its ssh or the link went) or, on a silent partition
    that no FIN or RST announces, no heartbeat for ``timeout`` seconds. wire.KILL on it means
    the supervisor judged the process hung: ``kill`` is set, and no grace is given."""
    while True:
        if POSIX and timeout > 0 and not select.select([0], [], [], timeout)[0]:
            why.append(f"no heartbeat on the lifeline for {timeout:g} s")
            break
        try:
            data = os.read(0, 65536)
        except OSError:
            break
        if not data:
            break
        if KILL in data and kill is not None:
            why.append("judged hung by the supervisor")
            kill.set()
            break
    stop.set()


def _continue_group(pid: int) -> None:
    if POSIX:
        try:
            os.killpg(pid, signal.SIGCONT)
        except OSError:
            pass


def _kill_group(pid: int) -> None:
    try:
        if POSIX:
            os.killpg(pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups to kill
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run(args: argparse.Namespace) -> int:
    try:
        given = read_preamble(0, args.env_key) if args.env_key else {}
    except (PreambleError, OSError) as e:
        _say(f"cannot start: {e}")
        return 2
    if args.cwd:
        os.makedirs(os.path.expanduser(args.cwd), exist_ok=True)
        os.chdir(os.path.expanduser(args.cwd))
    env = dict(os.environ)
    apply_defaults(env)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    env.update(given)
    if args.tag:
        env[TAG_ENV] = args.tag
        env.update(KEEP_ENVIRON)
    try:
        argv = command(args)
        child: Any = forked.spawn(argv, env, args.grace, args.dashboard, args.nice) if POSIX else None  # warm start
        if child is None:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env, start_new_session=POSIX,
                                     **popen_priority(args.nice))
    except Exception as e:  # noqa: BLE001 - reported over the channel, then a shell-like code
        _say(f"cannot start {args.command[:1] or args.launch}: {e}")
        return 127

    stop, kill = threading.Event(), threading.Event()
    why: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        why.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT) + ((signal.SIGHUP,) if POSIX else ()):
        signal.signal(sig, on_signal)
    threading.Thread(target=_watch_stdin, args=(stop, why, args.lifeline_timeout, kill), name="lifeline",
                     daemon=True).start()

    while child.poll() is None and not stop.wait(0.1):
        pass
    if child.poll() is None and kill.is_set():
        _say(f"{why[0]}: killing pid {child.pid} and its process group")
    elif child.poll() is None:
        _say(f"{why[0] if why else 'lifeline closed'}: stopping pid {child.pid} (grace {args.grace:g} s)")
        try:
            child.send_signal(signal.SIGTERM)  # the top process only: dask's nanny forwards it
            _continue_group(child.pid)  # a stopped (T) process acts on SIGTERM only once continued
            child.wait(timeout=args.grace)
        except subprocess.TimeoutExpired:
            _say(f"pid {child.pid} outlived the grace; killing its process group")
        except ProcessLookupError:
            pass
    _kill_group(child.pid)  # what the command left behind (a nanny's worker) goes too
    code = child.wait()
    if code == UNKNOWN_EXIT:  # its server went before it: it exited, how is lost
        return 1
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    return run(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
