"""Run on a fleet host: report what it has, receive TLS files, sweep what a cluster left.

``doctor`` sends this file's source over SSH to ``python -`` (so it works even
where clusterctl is not installed, and can say so); ``install`` and ``sweep``
run as ``python -m clusterctl.remote.probe`` because the agent needs clusterctl
there anyway. Standard library only at import time::

    $ python -m clusterctl.remote.probe facts --bind 127.0.0.1 --ports 8786,8787
    {"python": "3.11.2", "dask": "2026.8.0", ...}

``inventory`` (cores, memory, GPUs: what plan/sizing.py divides) is sent as source too. ``facts``
and ``install`` both report the host's versions as ``versions`` (see ``versions()``): `up` compares
them with the head's before anything starts there, `doctor` shows them.
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


def usable_cores() -> int:
    """The cores workers may use here, as dask.system.cpu_count counts them: the CPU affinity
    (containers, taskset; os.cpu_count() where there is none), and a cgroup CPU quota if lower."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(count, quota) if quota else count)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cgroup_cpu_quota() -> int | None:
    """A cgroup's CPU quota in whole cores (rounded up), v1 or v2, as dask.system reads it; None: no quota."""
    quota = period = None
    for d in ("cpuacct,cpu", "cpu,cpuacct"):
        try:
            quota, period = (int(_read(f"/sys/fs/cgroup/{d}/cpu.cfs_{k}_us")) for k in ("quota", "period"))
            break
        except (OSError, ValueError):
            pass
    if quota is None:
        try:
            group = _read("/proc/self/cgroup").strip().split(":")[-1].rstrip("/") + "/"
            quota, period = map(int, _read(f"/sys/fs/cgroup{group}cpu.max").split(" "))
        except (OSError, ValueError):  # "max 100000": no quota
            return None
    return -(-quota // period) if quota and period and quota > 0 and period > 0 else None


def usable_memory() -> int:
    """Bytes workers may use here, as distributed.system.memory_limit (Dask's MEMORY_LIMIT) finds them:
    the RAM, or a cgroup limit (v1 memory.limit_in_bytes and soft limit, v2 memory.max, .high, .low)
    or RLIMIT_RSS if lower."""
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: psutil (Dask's own way)
        limit = __import__("psutil").virtual_memory().total
    if sys.platform == "linux":
        for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes",
                     "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.high", "/sys/fs/cgroup/memory.low"):
            try:
                found = int(_read(path))
            except (OSError, ValueError):  # absent, or "max"
                continue
            if found > 0:
                limit = min(limit, found)
    try:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_RSS)[1]
    except (ImportError, OSError, ValueError):
        hard = 0
    return int(min(limit, hard) if hard > 0 else limit)


NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits")
NVIDIA_SMI_TIMEOUT = 10.0  # seconds: without persistence mode its first call loads the driver


def gpus(path: str | None = None) -> tuple[list[dict], str | None]:
    """([{index, name, memory (bytes)}], None), or ([], what nvidia-smi said) when it lists none."""
    import shutil
    import subprocess

    exe = shutil.which(NVIDIA_SMI[0], path=path)
    if exe is None:
        return [], f"nvidia-smi: not found on PATH ({path if path is not None else os.environ.get('PATH', '')})"
    try:
        proc = subprocess.run([exe, *NVIDIA_SMI[1:]], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        return [], f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT:g} s"
    except OSError as e:
        return [], f"nvidia-smi: {e.strerror or e}"
    said = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0:
        return [], f"nvidia-smi exit {proc.returncode}: {said[-1] if said else '(no output)'}"
    found = []
    for line in proc.stdout.splitlines():
        parts = [x.strip() for x in line.split(",")]
        try:
            found.append({"index": int(parts[0]), "name": ",".join(parts[1:-1]),
                          "memory": int(float(parts[-1]) * 2**20)})  # MiB (nounits)
        except (ValueError, IndexError):
            continue
    return found, None if found else f"nvidia-smi listed no GPU: {said[-1] if said else '(no output)'}"


def inventory(with_gpus: bool = False, path: str | None = None) -> dict:
    """What this host has for workers: usable cores and memory, and its GPUs if asked (nvidia-smi
    found on ``path``, else on PATH). plan/sizing.py's Inventory reads it."""
    out: dict = {"cores": usable_cores(), "memory": usable_memory(), "gpus": None, "gpu_error": None}
    if with_gpus:
        out["gpus"], out["gpu_error"] = gpus(path)
    out["time"] = time.time()
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
    v = sub.add_parser("inventory", help="print this host's usable cores, memory (and GPUs) as JSON")
    v.add_argument("--gpus", action="store_true", help="also list the GPUs nvidia-smi sees")
    v.add_argument("--path", default=None, help="where to look for nvidia-smi (default: PATH)")
    s = sub.add_parser("sweep", help="stop what a cluster's agents left here")
    s.add_argument("tag")
    s.add_argument("--grace", type=float, default=10.0)
    s.add_argument("--workdir", default=None, help="only processes running in this directory")
    s.add_argument("--warm", action="store_true", help="then start the cluster's fork server in --workdir")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.what == "inventory":
        result = inventory(args.gpus, args.path)
    elif args.what == "facts":
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
