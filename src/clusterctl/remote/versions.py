"""Head versus host: which package versions differ, and which of them refuse a start. Pure.

A report is what ``probe.versions()`` prints on each machine: Dask's own
``distributed.versions.get_versions()["packages"]`` (python as
``"3.11.9.final.0"``, then Dask's required and optional packages, None when
missing) plus ``clusterctl``.

Dask 2026.8 itself refuses nothing: ``Client.get_versions(check=True)`` only
warns (``error_message`` never fills its ``error``). The rules here, per package:

- ``clusterctl``: must match exactly (the agent and the probe protocol must agree);
- ``python``: major.minor must match (pickled code objects do not cross minor versions);
  a patch-level difference is listed only;
- Dask's required packages (dask, distributed, msgpack, cloudpickle, tornado, toolz): must
  match exactly, a missing one included (the wire protocol and serialization live there);
- anything else (Dask's optional numpy, pandas, lz4): listed only, as Dask warns.

"must match" refuses `up` under ``versions: strict``; nothing refuses under ``warn``.

>>> d = compare({"python": "3.11.9.final.0", "dask": "1"}, {"python": "3.11.2.final.0", "dask": "2"})
>>> [(x.package, x.refuses) for x in d]
[('dask', True), ('python', False)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

# Dask's `distributed.versions.required_packages` (tests/unit/test_versions.py keeps them equal)
REQUIRED = ("dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz")
OPTIONAL = ("numpy", "pandas", "lz4")
EXACT = frozenset(REQUIRED) | {"clusterctl"}
MISSING = "MISSING"  # how Dask's own table shows a package that is not there
Report = Mapping[str, "str | None"]


@dataclass(frozen=True)
class Difference:
    package: str
    head: str | None
    host: str | None
    refuses: bool  # under `versions: strict`

    def to_dict(self) -> dict:
        return {"package": self.package, "head": self.head, "host": self.host, "refuses": self.refuses}


def _minor(python: str | None) -> str | None:
    return ".".join(python.split(".")[:2]) if python else None


def compare(head: Report, host: Report) -> list[Difference]:
    """Every package whose version differs between the two reports, sorted by name."""
    out = []
    for pkg in sorted(set(head) | set(host)):
        mine, theirs = head.get(pkg), host.get(pkg)
        if mine == theirs:
            continue
        if pkg == "python":
            refuses = _minor(mine) != _minor(theirs)
        else:
            refuses = pkg in EXACT
        out.append(Difference(pkg, mine, theirs, refuses))
    return out


def refusing(diffs: list[Difference], mode: str) -> list[Difference]:
    """The differences that stop `up` under `versions: <mode>` ("strict" or "warn")."""
    return [d for d in diffs if d.refuses] if mode == "strict" else []


def table(per_host: Mapping[str, list[Difference]]) -> list[str]:
    """Plain aligned lines: package | head | one column per host | what strict does.

    A host without a difference in a package shows the head's version there."""
    hosts = [h for h, diffs in per_host.items() if diffs]
    if not hosts:
        return []
    rows: dict[str, dict] = {}
    for h in hosts:
        for d in per_host[h]:
            row = rows.setdefault(d.package, {"head": d.head, "refuses": False})
            row[h] = d.host
            row["refuses"] = row["refuses"] or d.refuses
    headers = ["package", "head", *hosts, "strict"]
    cells = [headers]
    for pkg in sorted(rows):
        r = rows[pkg]
        show = [_show(r["head"]), *[_show(r[h]) if h in r else _show(r["head"]) for h in hosts]]
        cells.append([pkg, *show, "refuses" if r["refuses"] else "warns"])
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def _show(v: str | None) -> str:
    return MISSING if v is None else v


def advice(d: Difference, python: str) -> str:
    """One line saying what to do about a refusing difference on a host using `python`."""
    if d.package == "python":
        return (f"python {_minor(d.host) or 'is missing'} here, {_minor(d.head)} on the head: "
                f"point `python:` at a Python {_minor(d.head)}")
    here = f"{d.package} {d.host or 'is missing'} here"
    if d.head is None:
        return f"{here}, not installed on the head: uninstall it from {python} or install it on the head"
    return f"{here}, {d.head} on the head: install {d.package}=={d.head} into {python}"
