"""Fleet-wide steps around a cluster's life: prepare every host, check them, clean them up.

>>> prepare(cfg)          # TLS material made here, node files copied to each host, versions compared   # doctest: +SKIP
>>> rows = doctor(cfg)    # one row per host: reachable, versions, Dask, ports, clock
>>> shutdown(cfg)         # sweep what is left on each host, close the shared connections
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..runtime import tls
from ..topology import LOCAL_HOST, ClusterConfig
from ..errors import ClusterError
from ..plan.specs import REMOTE_TLS_DIR, cluster_tag, remote_workdir
from . import direct, probe, ssh, versions

PROBE_SOURCE = Path(__file__).with_name("probe.py")
CLOCK_LIMIT = 2.0  # seconds of offset doctor accepts (logs and certificates line up)
T = TypeVar("T")
OnDiffer = Callable[[str, str], None]  # (host, table) for a host whose versions differ but may run

# The versions report each host passed with, by (cluster tag, host), for the life of this process
# (the supervisor's: the cluster's). A host coming back with the same report is not compared again.
_checked: dict[tuple[str, str], dict[str, str | None]] = {}
_checked_lock = threading.Lock()


def _each(names: list[str], fn: Callable[[str], T]) -> dict[str, T | BaseException]:
    """fn on every host at once; exceptions are returned, not raised."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        futures = {n: pool.submit(fn, n) for n in names}
    out: dict[str, Any] = {}
    for n, fut in futures.items():
        try:
            out[n] = fut.result()
        except BaseException as e:  # noqa: BLE001 - collected for the report
            out[n] = e
    return out


def prepare(cfg: ClusterConfig, require_all: bool = False, on_differ: OnDiffer | None = None) -> dict[str, str]:
    """Before anything starts: TLS material, copied to every remote host (which proves it reachable),
    and each host's versions compared with this machine's (`versions.py` says which differences
    refuse under `versions: strict`: a ClusterError naming the hosts, then the table). Differences
    that do not refuse go to ``on_differ(host, table)``, one call per host.

    Returns {host: why} for the hosts that did not answer: the cluster starts without them
    and their workers join when they answer. Raises ClusterError naming every host that failed
    otherwise (clusterctl missing there, a port taken), and for an unreachable host that is
    required (the scheduler's, `required: true`, or all with ``require_all``); nothing has
    been started then."""
    payload = _payload(cfg)
    hosts = cfg.remote_hosts()
    if hosts:  # where the processes' ssh will share one connection per host: private, before any ssh
        ssh.secure_control_dir(cfg, create=True)

    def install(name: str) -> dict[str, str | None] | None:
        return _install(cfg, name, payload)

    results = _each(hosts, install)
    unreachable = {n: str(r) for n, r in results.items() if isinstance(r, ssh.HostUnreachable)}
    required = {n for n in unreachable if require_all or cfg.host(n).required or n == cfg.scheduler.at}
    failed = [(n, r) for n, r in results.items()
              if isinstance(r, BaseException) and (n not in unreachable or n in required)]
    if failed:
        _abandon(cfg, hosts, answered=[n for n, r in results.items() if not isinstance(r, BaseException)])
        why = "; ".join(str(e) for _, e in failed)
        if required:
            why += f" ({', '.join(sorted(required))}: required; `required: false` lets the cluster start without it)"
        raise ClusterError(why)
    head = probe.versions()
    reports = {n: r for n, r in results.items() if not isinstance(r, BaseException)}
    diffs = {n: _differences(head, r) for n, r in reports.items()}
    refused = {n: d for n, d in diffs.items() if versions.refusing(d, cfg.versions)}
    if refused:
        _abandon(cfg, hosts, answered=list(reports))
        raise ClusterError(_refusal(cfg, refused))
    tag = cluster_tag(cfg)
    for name, report in reports.items():
        with _checked_lock:
            _checked[(tag, name)] = dict(report or {})
        if diffs[name] and on_differ is not None:
            on_differ(name, "\n".join(versions.table({name: diffs[name]})))
    return unreachable


def _abandon(cfg: ClusterConfig, hosts: list[str], answered: list[str] = ()) -> None:
    """A start refused: stop the fork servers the hosts that answered started, and leave no
    shared connection behind either."""
    _each(list(answered), lambda name: sweep(cfg, name))
    for name in hosts:
        try:
            ssh.close(cfg, name)
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        ssh.control_dir(cfg).rmdir()
    except OSError:
        pass


def _differences(head: dict[str, str | None], report: dict[str, str | None] | None) -> list[versions.Difference]:
    if report is None:  # a probe older than the versions report: clusterctl differs, the rest is unknown
        return [versions.Difference("clusterctl", head.get("clusterctl"), "older (no versions report)", True)]
    return versions.compare(head, report)


def _refusal(cfg: ClusterConfig, refused: dict[str, list[versions.Difference]]) -> str:
    names = ", ".join(f"{n!r} ({cfg.host(n).address})" for n in sorted(refused))
    what = sorted({d.package for ds in refused.values() for d in ds if d.refuses})
    first = (f"host{'s' if len(refused) > 1 else ''} {names}: {', '.join(what)} differ from this machine's; "
             f"install the head's versions there, or set `versions: warn` in {cfg.source or 'cluster.yaml'} to start anyway")
    return "\n".join([first, *versions.table(dict(sorted(refused.items())))])


def _payload(cfg: ClusterConfig) -> dict[str, dict]:
    payload: dict[str, dict] = {}
    if cfg.tls_enabled:
        files = tls.ensure(cfg)
        for name in tls.NODE_FILES:
            mode = 0o600 if name.endswith("key.pem") else 0o644
            payload[f"{REMOTE_TLS_DIR}/{name}"] = {"text": (files.root / name).read_text(), "mode": mode}
    return payload


def _install(cfg: ClusterConfig, name: str, payload: dict[str, dict], warm: bool = True) -> dict[str, str | None] | None:
    """Files to host `name`; returns its versions report (None from a probe too old to send one)."""
    h = cfg.host(name)
    argv = [h.python, "-m", "clusterctl.remote.probe", "install", remote_workdir(cfg, name)]
    if warm:  # its fork server imports distributed while the head starts the scheduler
        argv += ["--warm", cluster_tag(cfg)]
    s = cfg.scheduler
    if name == s.at:  # the scheduler starts there: its fixed ports must be free on that host
        argv += ["--bind", s.host, "--ports", f"{s.port},{s.dashboard_port}"]
    res = ssh.run(cfg, name, argv, stdin=json.dumps(payload), timeout=ssh.CONNECT_TIMEOUT + 20, master=True)
    if res.code == probe.BUSY:
        raise ClusterError(
            f"host {name!r} ({h.address}): scheduler {_last(res.stderr)}; stop that process or choose "
            f"other ports in {cfg.source or 'cluster.yaml'} (scheduler.port, scheduler.dashboard_port)"
        )
    if res.code != 0:
        raise ClusterError(
            f"host {name!r} ({h.address}): `{h.python} -m clusterctl.remote.probe` failed (exit {res.code}): "
            f"{_last(res.stderr)}; install clusterctl there or fix `python:` (see `clusterctl doctor`)"
        )
    try:
        said = json.loads(_last(res.stdout))
        report = said.get("versions")
    except (ValueError, AttributeError):
        said, report = {}, None
    if warm:  # its fork server's direct route (remote/direct.py), or none: processes go through agents
        direct.learn(cluster_tag(cfg), name, said.get("warm"))
    return report if isinstance(report, dict) else None


def reachable(cfg: ClusterConfig, name: str, timeout: float = 5.0) -> str | None:
    """None when host `name` answers over SSH now (a fresh connection), else why not."""
    try:
        ssh.run(cfg, name, ["true"], timeout=timeout + 5, connect_timeout=timeout, shared=False)
    except ClusterError as e:
        return str(e)
    return None


def revive(cfg: ClusterConfig, name: str, on_differ: OnDiffer | None = None) -> None:
    """A host that answers again: its files again (it may have rebooted), then stop whatever this
    cluster's agents left running there, so no worker name is ever there twice, and start a fresh
    fork server (whose route the next workers there take).

    Its versions are compared again only if its report changed since it was checked (it may
    have been reinstalled while away); a refusal raises ClusterError before the sweep."""
    direct.forget(cluster_tag(cfg), name)
    report = _install(cfg, name, _payload(cfg), warm=False)  # the sweep below would stop its fork server
    key = (cluster_tag(cfg), name)
    with _checked_lock:
        known = key in _checked and report is not None and _checked[key] == report
    if not known:
        diffs = _differences(probe.versions(), report)
        if versions.refusing(diffs, cfg.versions):
            raise ClusterError(_refusal(cfg, {name: diffs}))
        with _checked_lock:
            _checked[key] = dict(report or {})
        if diffs and on_differ is not None:
            on_differ(name, "\n".join(versions.table({name: diffs})))
    sweep(cfg, name, warm=True)


def sweep(cfg: ClusterConfig, name: str, warm: bool = False) -> None:
    """Stop what this cluster left on host ``name``; with ``warm``, then start its fork server afresh."""
    h = cfg.host(name)
    tag = cluster_tag(cfg)
    argv = [h.python, "-m", "clusterctl.remote.probe", "sweep", tag,
            "--grace", str(cfg.timeouts.shutdown), "--workdir", remote_workdir(cfg, name)]
    res = ssh.run(cfg, name, argv + (["--warm"] if warm else []), timeout=cfg.timeouts.shutdown + 20)
    if warm:
        try:
            direct.learn(tag, name, json.loads(_last(res.stdout)).get("warm"))
        except (ValueError, AttributeError):
            direct.forget(tag, name)


def shutdown(cfg: ClusterConfig) -> list[str]:
    """After a stop: on every remote host, stop what this cluster's agents left, then close the
    shared connection. Best effort: returns one note per host that could not be swept."""
    notes: list[str] = []
    hosts = cfg.remote_hosts()

    tag = cluster_tag(cfg)

    def sweep_and_close(name: str) -> None:
        try:  # through the host's fork server when its route is there (no remote shell), else over ssh
            if not direct.sweep(cfg, tag, name, cfg.timeouts.shutdown):
                sweep(cfg, name)
        finally:
            ssh.close(cfg, name)

    for name, r in _each(hosts, sweep_and_close).items():
        if isinstance(r, BaseException):
            notes.append(f"host {name!r}: {r}")
    direct.forget(tag)
    try:
        ssh.control_dir(cfg).rmdir()  # only when empty: no shared connection is left open
    except OSError:
        pass
    return notes


@dataclass
class Row:
    """One host in doctor's table."""

    host: str
    address: str
    ssh: str = "-"
    python: str = "-"
    dask: str = "-"
    distributed: str = "-"
    versions: str = "-"  # "same", or how many packages differ from the head's
    executables: str = "-"
    ports: str = "-"
    clock: str = "-"
    interpreter: str = "-"
    launcher: list[str] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)  # versions.Difference.to_dict()
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items()}, "ok": self.ok}


def head_versions() -> dict[str, str | None]:
    def v(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"python": ".".join(map(str, sys.version_info[:3])), "dask": v("dask"), "distributed": v("distributed")}


def head_report() -> dict[str, str | None]:
    """This machine's versions report, as every host's is compared with it."""
    return probe.versions()


def version_table(row: Row) -> list[str]:
    """doctor's table of one host's differences (package | head | host | strict), [] when none."""
    return versions.table({row.host: [versions.Difference(**d) for d in row.differences]})


def doctor(cfg: ClusterConfig) -> list[Row]:
    """Check every host the topology uses; a row with problems fails."""
    names = cfg.used_hosts()
    head = probe.versions()
    sched_at = cfg.scheduler.at or LOCAL_HOST
    return [r for r in _each(names, lambda n: _check(cfg, n, head, n == sched_at)).values()]  # type: ignore[misc]


def _check(cfg: ClusterConfig, name: str, head: dict[str, str | None], runs_scheduler: bool) -> Row:
    """One host's row; `head` is this machine's versions report (probe.versions())."""
    h = cfg.host(name)
    row = Row(host=name, address=h.address)
    ports = [p for p in (cfg.scheduler.port, cfg.scheduler.dashboard_port) if p] if runs_scheduler else []
    bind = cfg.scheduler.host if runs_scheduler else (h.bind or h.address if h.remote else cfg.scheduler.host)
    python = h.python if h.remote else (cfg.python or sys.executable)
    args = [python, "-", "facts", "--bind", bind, "--ports", ",".join(map(str, ports))]
    source = PROBE_SOURCE.read_text()
    sent = time.time()
    try:
        if h.remote:
            res = ssh.run(cfg, name, args, stdin=source, timeout=ssh.CONNECT_TIMEOUT + 20)
            code, out, err = res.code, res.stdout, res.stderr
            row.ssh = "ok"
        else:
            proc = subprocess.run(args, input=source, capture_output=True, text=True, timeout=30)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
            row.ssh = "local"
    except ClusterError as e:
        row.ssh = "unreachable"
        row.problems.append(str(e))
        return row
    except (OSError, subprocess.TimeoutExpired) as e:
        row.problems.append(f"cannot run {python}: {e}")
        return row
    received = time.time()
    if code != 0:
        row.python = "missing" if code == 127 else f"exit {code}"
        row.problems.append(f"{python} did not run the probe (exit {code}): {_last(err)}")
        return row
    try:
        facts = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        row.problems.append(f"{python}: unreadable probe output: {_last(out or err)}")
        return row
    row.python = facts["python"]
    row.interpreter = facts["executable"]
    for dist in ("dask", "distributed"):
        setattr(row, dist, facts.get(dist) or "missing")
    diffs = _differences(head, facts.get("versions"))  # what `up` compares, by the same rules
    row.differences = [d.to_dict() for d in diffs]
    row.versions = f"{len(diffs)} differ" if diffs else "same"
    row.problems += [versions.advice(d, python) for d in versions.refusing(diffs, cfg.versions)]
    if facts.get("launcher"):
        row.executables = facts["launcher"]["how"].split(":", 1)[0]  # 'dask beside the interpreter'
        row.launcher = facts["launcher"]["worker"]
    else:
        row.executables = "unresolved"
        row.problems.append(facts.get("resolve_error") or "no Dask executable found")
    busy = [p for p, free in (facts.get("ports") or {}).items() if free is not True]
    row.ports = "free" if not busy else "busy: " + ", ".join(busy)
    if not ports:
        row.ports = "-"
    if busy:
        row.problems.append(f"port {', '.join(busy)} on {bind} is in use; stop that process or change the port")
    # The host read its clock between `sent` and `received`: any offset inside that window is none.
    there = facts["time"]
    offset = there - received if there > received else there - sent if there < sent else 0.0
    row.clock = f"{offset:+.2f} s"
    if abs(offset) > CLOCK_LIMIT:
        row.problems.append(f"clock is {offset:+.1f} s off the head's; run NTP (chrony, systemd-timesyncd)")
    return row


def _last(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
