"""`clusterctl apply`'s plan: the running topology, the file's, and the groups' current sizes in;
the changes that converge one to the other out, one line each (as `terraform plan` shows them).

Pure: nothing here reads, starts or stops anything, so every rule is tested with two configs::

    >>> plan(old_cfg, new_cfg, {"default": 2}).lines()              # doctest: +SKIP
    ['~ group default: count 2 -> 4: start 2 workers',
     '~ group default: nthreads 1 -> 2: rolling restart of 4 workers (one at a time, results move first)']

What each change does:

- ``start`` a new group; ``retire`` a removed one (gracefully: results move first);
- ``scale`` a group whose `count:` changed in the file (a size set with `scale` since `up` is kept
  when the file's count did not change, as `kubectl apply` keeps a field the file did not change);
- ``roll``: a group whose worker settings changed is replaced by a rolling restart;
- ``in-place``: restart policies, `adapt:`, timeouts, max_workers, launch, versions;
- ``restart``: the scheduler must restart (its address, ports, dashboard, idle timeout, TLS), and
  every worker with it: refused unless ``--allow-restart``. A port written 0 matches any port;
- ``refused``: what a running cluster cannot take at all (name, state_dir, log_dir, python,
  bin_dir, a host's definition, a remote scheduler, a host not prepared at `up`): `down`, `up`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..topology import LOCAL_HOST, ClusterConfig, HostConfig, WorkerGroup
from ..topology.workers import adaptive_maximum, adaptive_start

WORKER_SETTINGS = ("nthreads", "memory_limit", "resources", "env", "nanny", "dashboard", "host")
SCHEDULER_SETTINGS = ("host", "port", "dashboard_port", "dashboard", "idle_timeout")
IN_PLACE = ("max_workers", "launch", "versions")
RESTART_WHY = "the scheduler must restart, and every worker with it (results held in memory are lost)"
DOWN_UP = "stop the cluster with the old file (`clusterctl down`), then `clusterctl up`"


class ChangeAction(StrEnum):
    """What a change does (its JSON and its comparisons with the plain words keep working)."""

    START = "start"  # a new group's workers start
    RETIRE = "retire"  # a removed group's workers retire
    SCALE = "scale"  # a group's size changes
    ROLL = "roll"  # a rolling restart replaces a group's workers
    IN_PLACE = "in-place"  # changed in place, nothing restarts
    RESTART = "restart"  # the scheduler restarts, and every worker with it
    REFUSED = "refused"  # a running cluster cannot take it


@dataclass(frozen=True)
class Change:
    marker: str  # "+" added, "-" removed, "~" changed
    subject: str  # "group gpu", "scheduler.port"
    detail: str
    action: ChangeAction
    group: str | None = None
    count: int | None = None  # start, scale: the group's size afterwards; roll: workers replaced
    why: str = ""  # restart, refused: the reason
    settings: tuple[str, ...] = field(default=(), compare=False)  # roll, in-place: which settings changed

    @property
    def line(self) -> str:
        return f"{self.marker} {self.subject}: {self.detail}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    def lines(self) -> list[str]:
        return [c.line for c in self.changes]

    def of(self, *actions: ChangeAction) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    @property
    def restart(self) -> bool:
        return bool(self.of(ChangeAction.RESTART))

    def refusal(self, allow_restart: bool) -> str | None:
        """One line when the plan cannot be applied (as asked), else None."""
        refused = self.of(ChangeAction.REFUSED)
        if refused:
            c = refused[0]
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            return f"apply refused: {c.subject} changed{more}: {c.why}"
        if self.restart and not allow_restart:
            subjects = ", ".join(c.subject for c in self.of(ChangeAction.RESTART))
            return f"apply refused: {subjects} changed: {RESTART_WHY}; run `clusterctl apply --allow-restart` to do so"
        return None


def plan(old: ClusterConfig, new: ClusterConfig, counts: dict[str, int]) -> Plan:
    """The changes from the running ``old`` (sizes now: ``counts``) to the file's ``new``."""
    changes = _cluster(old, new) + _scheduler(old, new) + _policies(old, new)
    restart = any(c.action == ChangeAction.RESTART for c in changes)
    olds = {g.name: g for g in old.workers}
    sizes: dict[str, int] = {}
    for g in new.workers:
        if g.name in olds and olds[g.name].gpus != g.gpus:  # which GPUs, hence how many workers where
            changes.append(_refused(f"group {g.name}: gpus", olds[g.name].gpus, g.gpus,
                                    f"each GPU's worker is planned at `up`; {DOWN_UP}"))
        elif g.name in olds:
            now = counts.get(g.name, olds[g.name].count)
            group_changes, sizes[g.name] = _group(old, new, olds[g.name], g, now, restart)
            changes += group_changes
        else:
            changes += _new_group(old, new, g)
            sizes[g.name] = adaptive_start(g) if g.adapt else g.count
    news = {g.name for g in new.workers}
    for g in old.workers:
        if g.name not in news:
            n = counts.get(g.name, g.count)
            changes.append(Change("-", f"group {g.name}", f"retire {_workers(n)} gracefully (results move first)",
                                  ChangeAction.RETIRE, g.name, 0))
    total = sum(sizes.values())
    if total > new.max_workers:
        changes.append(Change("~", "max_workers", f"{total} workers in all would be more than {new.max_workers}",
                              ChangeAction.REFUSED, why=f"{total} workers in all is more than max_workers, "
                              f"{new.max_workers}; raise `max_workers:` or lower a count"))
    return Plan(tuple(changes))


def _cluster(old: ClusterConfig, new: ClusterConfig) -> list[Change]:
    out: list[Change] = []
    for key in ("name", "state_dir"):
        if getattr(old, key) != getattr(new, key):
            out.append(_refused(key, getattr(old, key), getattr(new, key),
                                f"it is a new cluster (the state directory holds this one's ledger, lock and logs); {DOWN_UP}"))
    if not out and old.state_path != new.state_path:
        out.append(_refused("state_dir", str(old.state_path), str(new.state_path),
                            f"the file's state directory is not the running cluster's; {DOWN_UP}"))
    if old.log_dir != new.log_dir or (old.log_dir and old.log_path != new.log_path):
        out.append(_refused("log_dir", str(old.log_path), str(new.log_path),
                            f"every process logs there, the supervisor too; {DOWN_UP}"))
    for key in ("python", "bin_dir"):
        if getattr(old, key) != getattr(new, key):
            out.append(_refused(key, getattr(old, key), getattr(new, key),
                                f"the Dask executables are found at `up`; {DOWN_UP}"))
    out += _hosts(old, new)
    if old.tls_enabled != new.tls_enabled:
        detail = f"TLS {_on(old.tls_enabled)} -> {_on(new.tls_enabled)}"
        if old.remote_hosts() or new.remote_hosts():
            out.append(Change("~", "tls", detail, ChangeAction.REFUSED,
                              why=f"TLS files reach other hosts at `up`; {DOWN_UP}"))
        else:
            out.append(Change("~", "tls", f"{detail}: restarts the scheduler and every worker", ChangeAction.RESTART,
                              why=RESTART_WHY))
    elif (old.tls, old.insecure) != (new.tls, new.insecure):
        out.append(Change("~", "tls", f"TLS stays {_on(new.tls_enabled)} (in place, nothing restarts)",
                          ChangeAction.IN_PLACE))
    for key in ("startup", "shutdown"):
        a, b = getattr(old.timeouts, key), getattr(new.timeouts, key)
        if a != b:
            out.append(Change("~", f"timeouts.{key}", f"{a:g} -> {b:g} s (in place, from the next start or stop)",
                              ChangeAction.IN_PLACE))
    for key in IN_PLACE:
        if getattr(old, key) != getattr(new, key):
            out.append(Change("~", key, f"{_show(getattr(old, key))} -> {_show(getattr(new, key))} (in place)",
                              ChangeAction.IN_PLACE))
    return out


OWNER_KEYS = ("owner", "hours")  # judged by the new rule at once: in place
START_KEYS = ("nice", "reserve")  # what workers start with


def _policies(old: ClusterConfig, new: ClusterConfig) -> list[Change]:
    """`owner:`, `hours:`, `nice:`, `reserve:` as each host sees them (its own, else the top level's)."""
    out = []
    known = {LOCAL_HOST} | {h.name for h in old.hosts} & {h.name for h in new.hosts}
    for name in [n for n in dict.fromkeys([LOCAL_HOST, *old.used_hosts(), *new.used_hosts()]) if n in known]:
        a, b = old.policy(name), new.policy(name)  # (a host added or removed: _hosts says what that does)
        for key in OWNER_KEYS:
            if getattr(a, key) != getattr(b, key):
                out.append(Change("~", f"{key} on {name}", "judged by the new rule from now (in place)",
                                  ChangeAction.IN_PLACE, settings=(key,)))
        for key in START_KEYS:
            if getattr(a, key) != getattr(b, key) and name in old.used_hosts():
                out.append(_refused(f"{key} on {name}", getattr(a, key), getattr(b, key),
                                    f"its workers start with it; {DOWN_UP}"))
    return out


def _bare(h: HostConfig | None) -> dict[str, Any] | None:
    """A host's definition without its owner, hours, nice and reserve (compared apart)."""
    return None if h is None else h.model_dump(exclude={*OWNER_KEYS, *START_KEYS})


def _hosts(old: ClusterConfig, new: ClusterConfig) -> list[Change]:
    before, after = {h.name: _bare(h) for h in old.hosts}, {h.name: _bare(h) for h in new.hosts}
    used = set(old.used_hosts()) | set(new.used_hosts())
    out = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) == after.get(name):
            continue
        what = "added" if name not in before else "removed" if name not in after else "changed"
        if name in used:
            out.append(Change("~", f"hosts[{name}]", what, ChangeAction.REFUSED,
                              why=f"hosts are prepared at `up` (files, TLS, versions); {DOWN_UP}"))
        else:
            out.append(Change("~", f"hosts[{name}]", f"{what} (nothing runs there: in place)", ChangeAction.IN_PLACE))
    return out


def _scheduler(old: ClusterConfig, new: ClusterConfig) -> list[Change]:
    a, b = old.scheduler, new.scheduler
    out = []
    if a.at != b.at:
        out.append(_refused("scheduler.at", a.at or "localhost", b.at or "localhost",
                            f"the scheduler's host is chosen at `up`; {DOWN_UP}"))
    for key in SCHEDULER_SETTINGS:
        x, y = getattr(a, key), getattr(b, key)
        if x == y or (key in ("port", "dashboard_port") and y == 0):  # 0: any free port, the one in use is
            continue
        if old.scheduler_remote:
            out.append(_refused(f"scheduler.{key}", x, y, f"the scheduler runs on {a.at} over ssh; {DOWN_UP}"))
        else:
            out.append(Change("~", f"scheduler.{key}", f"{_show(x)} -> {_show(y)}: restarts the scheduler and every "
                              "worker", ChangeAction.RESTART, why=RESTART_WHY))
    if a.restart != b.restart:
        out.append(Change("~", "scheduler.restart", f"{_policy(a.restart, b.restart)} (in place)",
                          ChangeAction.IN_PLACE))
    return out


def _new_group(old: ClusterConfig, new: ClusterConfig, g: WorkerGroup) -> list[Change]:
    unprepared = _unprepared(old, new, g)
    if unprepared:
        return [Change("+", f"group {g.name}", f"on {', '.join(unprepared)}", ChangeAction.REFUSED, g.name,
                       why=f"{unprepared[0]} was not prepared at `up` (no worker ran there); {DOWN_UP}")]
    shape = ", ".join(f"{k} {_show(getattr(g, k))}" for k in ("nthreads", "memory_limit", "resources", "at")
                      if getattr(g, k) not in (None, {}))
    if g.adapt:
        n = adaptive_start(g)
        return [Change("+", f"group {g.name}", f"start {_workers(n)}, adaptive between {g.adapt.minimum} and "
                       f"{adaptive_maximum(g)} ({shape})", ChangeAction.START, g.name, n)]
    return [Change("+", f"group {g.name}", f"start {_workers(g.count)} ({shape})", ChangeAction.START, g.name, g.count)]


def _group(old: ClusterConfig, new: ClusterConfig, a: WorkerGroup, b: WorkerGroup, now: int,
           restart: bool) -> tuple[list[Change], int]:
    """One group's changes, and its size afterwards."""
    subject, out = f"group {b.name}", []
    target = now
    if a.adapt != b.adapt:
        if b.adapt is None:
            out.append(Change("~", subject, f"adapt off: fixed at {b.count} (in place)", ChangeAction.IN_PLACE, b.name,
                              settings=("adapt",)))
            target = b.count
        else:
            was = "adaptive" if a.adapt else "fixed"
            out.append(Change("~", subject, f"{was} -> adaptive between {b.adapt.minimum} and {adaptive_maximum(b)}, "
                              f"target duration {b.adapt.target_duration:g} s (in place)", ChangeAction.IN_PLACE,
                              b.name, settings=("adapt",)))
    elif b.adapt is None and a.count != b.count:
        target = b.count
    if target != now:
        verb = f"start {_workers(target - now)}" if target > now else f"retire {_workers(now - target)} gracefully"
        out.append(Change("~", subject, f"count {now} -> {target}: {verb}", ChangeAction.SCALE, b.name, target))
    settings = [k for k in WORKER_SETTINGS if getattr(a, k) != getattr(b, k)]
    k = min(now, target)
    if a.placement(k) != b.placement(k) or a.hosts_used != b.hosts_used:
        new_hosts = _unprepared(old, new, b)
        if new_hosts:
            out.append(Change("~", subject, f"at: {_show(a.at)} -> {_show(b.at)}", ChangeAction.REFUSED, b.name,
                              why=f"{new_hosts[0]} was not prepared at `up` (no worker ran there); {DOWN_UP}"))
        settings.append("at")
    if settings and k:
        diff = "; ".join(_setting(k_, a, b) for k_ in settings)
        how = ("restarted with the scheduler, with the new settings" if restart
               else f"rolling restart of {_workers(k)} (one at a time, results move first)")
        out.append(Change("~", subject, f"{diff}: {how}", ChangeAction.ROLL, b.name, k, settings=tuple(settings)))
    elif settings:
        out.append(Change("~", subject, f"{'; '.join(_setting(k_, a, b) for k_ in settings)} (no worker runs: "
                          "in place)", ChangeAction.IN_PLACE, b.name))
    if a.restart != b.restart:
        out.append(Change("~", subject, f"{_policy(a.restart, b.restart)} (in place)", ChangeAction.IN_PLACE, b.name,
                          settings=("restart",)))
    return out, target


def _setting(key: str, a: WorkerGroup, b: WorkerGroup) -> str:
    if key == "env":  # values may be secrets: names only
        x, y = a.env, b.env
        parts = [f"+{k}" for k in sorted(set(y) - set(x))] + [f"-{k}" for k in sorted(set(x) - set(y))] + \
            [f"~{k}" for k in sorted(set(x) & set(y)) if x[k] != y[k]]
        return f"env {' '.join(parts)}"
    return f"{key} {_show(getattr(a, key))} -> {_show(getattr(b, key))}"


def _policy(a: Any, b: Any) -> str:
    keys = [k for k in type(a).model_fields if getattr(a, k) != getattr(b, k)]
    return "; ".join(f"restart.{k} {_show(getattr(a, k))} -> {_show(getattr(b, k))}" for k in keys)


def _refused(key: str, a: Any, b: Any, why: str) -> Change:
    return Change("~", key, f"{_show(a)} -> {_show(b)}", ChangeAction.REFUSED, why=why)


def _unprepared(old: ClusterConfig, new: ClusterConfig, g: WorkerGroup) -> list[str]:
    """The other hosts ``g`` runs on that the running cluster did not prepare at `up`."""
    return [h for h in g.hosts_used if h not in old.used_hosts() and new.host(h).remote]


def _workers(n: int) -> str:
    return f"{n} worker{'s' * (n != 1)}"


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_show(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
