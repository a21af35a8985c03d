"""What a previous run left here, read from the ledger and the process table: a supervisor that
still runs this cluster (``leftovers``), or processes carrying its tag that no ledger entry
accounts for (``strangers``). `up` asks both before it starts a supervisor; the supervisor asks
``leftovers`` again under its lock, then adopts what it may (supervisor/adopt.py)."""

from __future__ import annotations

import os

import psutil

from .ledger import Ledger, LedgerRecord, LedgerUnreadable


def leftovers(ledger: Ledger) -> str | None:
    """Why a new supervisor must not start here, or None: never a second supervisor over the
    first, never over a ledger that cannot be read. Live processes whose supervisor is gone are
    no longer a reason: the new supervisor adopts them (supervisor/adopt.py survey())."""
    try:
        old = ledger.read()
    except LedgerUnreadable as e:  # unknown is not "nothing runs": `down` sweeps by tag first
        return f"{e}; run `clusterctl down` (it stops this cluster's processes by their tag)"
    if old is None:
        return None
    sup = old.supervisor_id
    if sup and sup.pid != os.getpid() and sup.alive():
        return f"supervisor pid {sup.pid} already runs this cluster; use `clusterctl status`"
    return None


def strangers(record: LedgerRecord | None, tagged: list[psutil.Process], tag: str) -> list[psutil.Process]:
    """Processes carrying the tag that no ledger entry accounts for (`up` refuses over them):
    not a recorded process of this cluster, nor one of their descendants (a nanny's worker),
    nor a shared ssh connection (a ControlMaster lingers by design)."""
    known: set[int] = set()
    for _, pid in (record.process_ids() if record else []):
        proc = pid.tagged(tag).get()
        if proc is None:
            continue
        known.add(proc.pid)
        try:
            known.update(c.pid for c in proc.children(recursive=True))
        except psutil.Error:
            pass
    return [p for p in tagged if p.pid not in known and not _ssh(p)]


def _ssh(p: psutil.Process) -> bool:
    try:
        argv = p.cmdline()
    except psutil.Error:
        return False
    words = " ".join(argv).split()  # a ControlMaster retitles itself "ssh: PATH [mux]"
    return bool(words) and os.path.basename(words[0]).rstrip(":") == "ssh"
