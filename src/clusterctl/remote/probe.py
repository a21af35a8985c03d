"""Run on a fleet host: report what it has, receive TLS files, sweep what a cluster left.

``doctor`` sends this file's source over SSH to ``python -`` (so it works even
where clusterctl is not installed, and can say so); ``install`` and ``sweep``
run as ``python -m clusterctl.remote.probe`` because the agent needs clusterctl
there anyway. Standard library only at import time::

    $ python -m clusterctl.remote.probe facts --bind 127.0.0.1 --ports 8786,8787
    {"python": "3.11.2", "dask": "2026.8.0", ...}

``facts`` and ``install`` both report the host's versions as ``versions`` (see ``versions()``):
`up` compares them with the head's before anything starts there, `doctor` shows them.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import socket
import sys
import tempfile
import time

TAG_ENV = "CLUSTERCTL_TAG"


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# Dask's `distributed.versions` lists, required then optional (tests/unit/test_versions.py keeps
# them equal): the host reports them without importing distributed (that import takes ~1 s).
DASK_PACKAGES = ("dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz", "numpy", "pandas", "lz4")


def versions() -> dict:
    """What ``distributed.versions.get_versions()["packages"]`` reports here, plus clusterctl."""
    out = {"python": ".".join(map(str, sys.version_info))}  # as Dask writes it: 3.11.9.final.0
    for dist in DASK_PACKAGES:
        out[dist] = _version(dist)
    out["clusterctl"] = _version("clusterctl")
    return out


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise  # EACCES (a port below 1024 without root): "cannot bind ...: Permission denied", not "in use"
    return True


def facts(bind: str | None, ports: list[int]) -> dict:
    """What doctor compares with the head: versions, Dask's executables, free ports, the time."""
    out = {
        "os": platform.system(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "clusterctl": _version("clusterctl"),
        "versions": versions(),
        "launcher": None,
        "resolve_error": None,
        "ports": {},
    }
    try:
        from clusterctl.plan.resolve import resolve  # the same search as on the head, run here

        launcher = resolve()
        out["launcher"] = {"scheduler": list(launcher.scheduler), "worker": list(launcher.worker), "how": launcher.how}
    except ImportError:
        out["resolve_error"] = f"clusterctl is not importable by {sys.executable}"
    except Exception as e:  # noqa: BLE001 - ResolveError and friends: reported, not raised
        out["resolve_error"] = str(e)
    for port in ports:
        try:
            out["ports"][str(port)] = _port_free(bind or "127.0.0.1", port)
        except OSError as e:
            out["ports"][str(port)] = f"cannot bind {bind}: {e.strerror or e}"
    out["time"] = time.time()  # last, so the offset includes as little of the probe as possible
    return out


BUSY = 3  # install's exit code when a port it was asked to check is taken


def busy_ports(bind: str, ports: list[int]) -> list[str]:
    """The ports of `ports` that cannot be bound on `bind` (with the reason if not 'in use')."""
    busy = []
    for port in ports:
        try:
            if not _port_free(bind, port):
                busy.append(str(port))
        except OSError as e:
            busy.append(f"{port} (cannot bind {bind}: {e.strerror or e})")
    return busy


def install(root: str, payload: dict) -> dict:
    """Write {relative path: {"text": ..., "mode": 0o600}} under root, each atomically."""
    root = os.path.expanduser(root)
    written = []
    for rel, item in payload.items():
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise SystemExit(f"refusing path {rel!r}: must stay inside {root}")
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomically(path, item["text"], int(item.get("mode", 0o600)))
        written.append(rel)
    return {"root": os.path.abspath(root), "written": written, "versions": versions()}


def write_atomically(path: str, text: str, mode: int = 0o600) -> None:
    """``text`` to ``path`` with ``mode`` from the start (a temp file beside it, then a rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def start_forkserver(root: str, tag: str) -> dict | bool:
    """The host's fork server, started in the background with the environment an agent gives its
    Dask process (so their requests match), importing distributed while the head starts the scheduler.

    Returns its direct route (remote/wire.py: port and token, from its 0600 file) for the head,
    True for a server without one, False for none."""
    from ..plan.tag import KEEP_ENVIRON, TAG_ENV as TAG
    from ..runtime.tuning import apply_defaults
    from . import forked

    env = dict(os.environ)
    apply_defaults(env)
    env.update({TAG: tag, **KEEP_ENVIRON})
    try:  # an optimisation: a server that cannot start means agents exec their processes
        os.makedirs(os.path.expanduser(root), exist_ok=True)
        os.chdir(os.path.expanduser(root))
        server = forked.start(env)
        if not server:
            return False
    except OSError as e:
        print(f"no fork server: {e}", file=sys.stderr)
        return False
    try:
        with open("forkserver.route") as f:  # remote/wire.py's ROUTE
            route = json.load(f)
        if server == -1:  # no SO_PEERCRED here (macOS): at least a live process wrote it
            os.kill(int(route["pid"]), 0)
        elif route.get("pid") != server:  # an older server's file (one killed before it could remove it)
            return True
        return {"port": int(route["port"]), "token": str(route["token"])}
    except (OSError, ValueError, KeyError, TypeError):  # (ProcessLookupError: that writer is gone)
        return True


def sweep(tag: str, grace: float, workdir: str | None = None) -> dict:
    """Stop every agent of this cluster here (they stop their children), then kill stragglers by tag.

    With ``workdir``, only processes running in it (the agents chdir there, their Dask processes
    inherit it): this "host" may share its process table with the head (the same machine reached
    over ssh, or a network namespace), whose own processes carry the same tag."""
    import psutil

    from ..runtime.process import wait_gone  # a zombie is gone: a slow init reaps it seconds later

    root = os.path.realpath(os.path.expanduser(workdir)) if workdir else None

    def inside(p) -> bool:
        if root is None:
            return True
        try:
            cwd = os.path.realpath(p.cwd())
        except (psutil.Error, OSError):
            return False
        return cwd == root or cwd.startswith(root + os.sep)

    def tagged_agents():
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if "clusterctl.remote.agent" in cmd and tag in cmd and p.pid != os.getpid() and inside(p):
                found.append(p)
        return found

    agents = tagged_agents()
    for p in agents:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    wait_gone(agents, timeout=grace + 2)
    left = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(TAG_ENV) == tag and inside(p):
                left.append(p)
        except (psutil.Error, OSError):
            continue
    left += [p for p in tagged_agents() if p.pid not in {q.pid for q in left}]
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    wait_gone(left, timeout=5)
    if root is not None:  # a server killed above could not remove its route file (remote/wire.py)
        try:
            os.unlink(os.path.join(root, "forkserver.route"))
        except OSError:
            pass
    return {"agents": len(agents), "killed": len(left)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clusterctl.remote.probe")
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("facts", help="print this host's facts as JSON")
    f.add_argument("--bind", default=None)
    f.add_argument("--ports", default="")
    i = sub.add_parser("install", help="write files given as JSON on stdin under ROOT")
    i.add_argument("root")
    i.add_argument("--bind", default=None, help="with --ports: fail (exit 3) if one is in use there")
    i.add_argument("--ports", default="")
    i.add_argument("--warm", default=None, metavar="TAG",
                   help="then start this cluster's fork server in ROOT (remote/forkserver.py), if none runs there")
    s = sub.add_parser("sweep", help="stop what a cluster's agents left here")
    s.add_argument("tag")
    s.add_argument("--grace", type=float, default=10.0)
    s.add_argument("--workdir", default=None, help="only processes running in this directory")
    s.add_argument("--warm", action="store_true", help="then start the cluster's fork server in --workdir")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.what == "facts":
        ports = [int(x) for x in args.ports.split(",") if x.strip()]
        result = facts(args.bind, ports)
    elif args.what == "install":
        payload = json.load(sys.stdin)
        busy = busy_ports(args.bind or "127.0.0.1", [int(x) for x in args.ports.split(",") if x.strip()])
        if busy:  # a scheduler is to start here: say so before anything is written or started
            print(f"port {', '.join(busy)} on {args.bind} is already in use", file=sys.stderr)
            return BUSY
        warm: dict = {}
        args.root = os.path.abspath(os.path.expanduser(args.root))  # the server's start changes directory
        if args.warm:  # its start (an interpreter, then "ready") overlaps the files and the versions report
            import threading

            starting = threading.Thread(target=lambda: warm.update(route=start_forkserver(args.root, args.warm)))
            starting.start()
        result = install(args.root, payload)
        if args.warm:
            starting.join()
            result["warm"] = warm.get("route", False)
    else:
        result = sweep(args.tag, args.grace, args.workdir)
        if args.warm and args.workdir:
            result["warm"] = start_forkserver(args.workdir, args.tag)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
