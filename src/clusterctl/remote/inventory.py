"""Each host's inventory for sizing (plan/sizing.py), gathered before the plan is made.

The head's is measured here, in this process (microseconds: a few syscalls, no subprocess unless a
group asks for GPUs). Another host's comes from the probe (remote/probe.py, its source sent to the
host's ``python -`` as doctor does, so the head's version of it runs there) over ssh: all hosts at
once, each within INVENTORY_TIMEOUT. A host that does not answer is sized from its inventory of an
earlier `up` (<state>/inventory.json, written atomically), else as unknown (plan/sizing.py says how).

    >>> cfg, sizing = sized(cfg, counts, emit=events.emit)   # at `up`           # doctest: +SKIP
    >>> cfg, sizing = sized(cfg, at_up=False)                 # `validate`: asks, writes nothing
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from ..errors import ClusterError
from ..plan.sizing import Inventory, Sizing, needs, size
from ..runtime.ledger import atomic_write
from ..topology import ClusterConfig
from . import probe, ssh
from .fleet import PROBE_SOURCE, _each, _last

INVENTORY_TIMEOUT = 6.0  # seconds for a remote host's answer (ssh, Python, nvidia-smi): `up` waits no longer
CONNECT_TIMEOUT = 2  # seconds for its TCP connection (a silent host: what a degraded `up` waits more), within that
CACHE = "inventory.json"
Emit = Callable[..., None]


def measure_here(gpus: bool = False) -> Inventory:
    """This machine's inventory (nvidia-smi run only when ``gpus``)."""
    return Inventory.from_dict(probe.inventory(gpus))


def ask(cfg: ClusterConfig, name: str, gpus: bool, *, master: bool = False,
        timeout: float = INVENTORY_TIMEOUT) -> Inventory:
    """Host ``name``'s inventory through its probe; ClusterError (HostUnreachable: ssh) if none came.
    nvidia-smi is looked for on the host's `env:` PATH when it sets one (the workers' PATH), else on
    the PATH of an ssh session there. ``master`` leaves the shared connection for `up`'s next steps."""
    h = cfg.host(name)
    argv = [h.python, "-", "inventory"] + (["--gpus"] if gpus else [])
    if gpus and "PATH" in h.env:
        argv += ["--path", h.env["PATH"]]
    res = ssh.run(cfg, name, argv, stdin=PROBE_SOURCE.read_text(), timeout=timeout,
                  connect_timeout=min(CONNECT_TIMEOUT, timeout), master=master)
    if res.code != 0:
        raise ClusterError(f"host {name!r}: `{h.python} -` did not run the probe (exit {res.code}): {_last(res.stderr)}")
    try:
        return Inventory.from_dict(json.loads(_last(res.stdout)))
    except ValueError as e:
        raise ClusterError(f"host {name!r}: unreadable inventory ({e}): {_last(res.stdout)}") from None


def read_cache(cfg: ClusterConfig) -> dict[str, Inventory]:
    """The inventories an earlier `up` measured, by host (a missing or broken file: none)."""
    try:
        hosts = json.loads((cfg.state_path / CACHE).read_text()).get("hosts", {})
    except (OSError, ValueError, AttributeError):
        return {}
    out = {}
    for name, d in hosts.items() if isinstance(hosts, dict) else ():
        try:
            out[name] = Inventory.from_dict(d, cached=True)
        except ValueError:
            continue
    return out


def write_cache(cfg: ClusterConfig, measured: dict[str, Inventory]) -> None:
    """Add ``measured`` to inventory.json (other hosts' entries stay), atomically (readers see old or new)."""
    known = {n: inv.to_dict() for n, inv in read_cache(cfg).items()}
    known.update({n: inv.to_dict() for n, inv in measured.items()})
    atomic_write(cfg.state_path / CACHE, json.dumps({"hosts": known}, indent=1, sort_keys=True), mode=0o600)


def gather(cfg: ClusterConfig, needed: dict[str, bool], *, at_up: bool = True, emit: Emit | None = None,
           timeout: float = INVENTORY_TIMEOUT) -> tuple[dict[str, Inventory], dict[str, str]]:
    """({host: inventory}, {host: why it has none}) for the hosts in ``needed`` ({host: GPUs too?}).
    At `up` (``at_up``) the remote hosts' answers go to the cache and their shared connections stay
    open for preparing them; `validate` asks over connections of its own and writes nothing."""
    inventories: dict[str, Inventory] = {}
    remote = [h for h in needed if cfg.host(h).remote]
    for h in needed:
        if h not in remote:
            inventories[h] = measure_here(needed[h])
    if not remote:
        return inventories, {}
    if at_up:
        ssh.secure_control_dir(cfg, create=True)  # the shared connections `up` goes on using
    t0 = time.monotonic()
    answers = _each(remote, lambda h: ask(cfg, h, needed[h], master=at_up, timeout=timeout))
    took = time.monotonic() - t0
    fresh = {h: a for h, a in answers.items() if isinstance(a, Inventory)}
    inventories.update(fresh)
    if at_up and fresh:
        try:
            write_cache(cfg, fresh)
        except OSError as e:  # sizing goes on; the next up asks again
            _note(emit, "cluster", "inventory-not-cached", f"{cfg.state_path / CACHE}: {e}")
    unknown: dict[str, str] = {}
    cached = read_cache(cfg) if len(fresh) < len(remote) else {}
    for h, a in answers.items():
        if isinstance(a, Inventory):
            continue
        why = " ".join(str(a).split()) or type(a).__name__
        old = cached.get(h)
        if old is not None and (old.gpus is not None or not needed[h]):
            inventories[h] = old
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(old.measured)) if old.measured else "an earlier up"
            _note(emit, h, "inventory-cached", f"no inventory ({why}); sized from the one of {when}")
        else:
            unknown[h] = why if at_up else f"{why}; resolved at `up`"
            _note(emit, h, "inventory-unknown", f"no inventory ({why}), none cached: 1 worker per count: auto "
                  "group, Dask's own memory_limit: auto there")
    _note(emit, "cluster", "inventories", f"{len(fresh)} of {len(remote)} hosts answered in {took:.2f} s",
          seconds=round(took, 3))
    return inventories, unknown


def sized(cfg: ClusterConfig, counts: dict[str, int] | None = None, *, at_up: bool = True,
          emit: Emit | None = None) -> tuple[ClusterConfig, Sizing]:
    """``cfg`` sized to its hosts (plan/sizing.py), and the sizing; ConfigError (one line) when a host
    lacks the GPUs or the memory asked for. Nothing is gathered when no group needs an inventory."""
    needed = needs(cfg)
    if not needed:
        return cfg, Sizing({})
    inventories, unknown = gather(cfg, needed, at_up=at_up, emit=emit)
    try:
        sizing = size(cfg, inventories, counts, unknown)
    except ClusterError as e:
        if at_up:  # `up` stops here: leave no shared connection behind
            _note(emit, "cluster", "failed", str(e))
            for h in inventories:
                if cfg.host(h).remote:
                    ssh.close(cfg, h)
        raise
    for s in sizing.hosts.values():
        _note(emit, s.host, "sized", s.line())
    return sizing.apply(cfg), sizing


def _note(emit: Emit | None, process: str, event: str, detail: str, **extra: Any) -> None:
    if emit is not None:
        emit(process, event, detail, **extra)
