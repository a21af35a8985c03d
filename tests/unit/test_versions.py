"""Head versus host versions: what differs, what refuses `up`, the table (pure), and how
prepare/revive use it (their ssh steps replaced by scripted reports)."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import versions as dask_versions

from clusterctl.errors import ClusterError
from clusterctl.remote import fleet, probe
from clusterctl.remote.versions import OPTIONAL, REQUIRED, Difference, advice, compare, refusing, table
from clusterctl.topology import parse_config

HEAD = {"python": "3.11.9.final.0", "dask": "2026.8.0", "distributed": "2026.8.0", "msgpack": "1.1.0",
        "cloudpickle": "3.1.1", "tornado": "6.5", "toolz": "1.0.0", "numpy": "2.3.0", "pandas": "2.3.1",
        "lz4": "4.4.4", "clusterctl": "0.1.0"}


def host(**changes) -> dict:
    return {**HEAD, **changes}


def test_identical_reports_differ_in_nothing():
    assert compare(HEAD, dict(HEAD)) == []
    assert table({"ws2": []}) == []


@pytest.mark.parametrize("python, refuses", [("3.12.1.final.0", True), ("3.10.9.final.0", True),
                                             ("3.11.2.final.0", False), ("3.11.9.candidate.1", False)])
def test_python_refuses_only_when_major_minor_differ(python, refuses):
    assert compare(HEAD, host(python=python)) == [Difference("python", HEAD["python"], python, refuses)]


@pytest.mark.parametrize("pkg", [*REQUIRED, "clusterctl"])
def test_a_required_package_or_clusterctl_must_match_exactly(pkg):
    assert compare(HEAD, host(**{pkg: "0.0.1"})) == [Difference(pkg, HEAD[pkg], "0.0.1", True)]
    assert compare(HEAD, host(**{pkg: None})) == [Difference(pkg, HEAD[pkg], None, True)]  # missing there


def test_dask_differs_refuses_under_strict_and_not_under_warn():
    diffs = compare(HEAD, host(dask="2026.7.0", numpy="2.2.0"))
    assert [d.package for d in refusing(diffs, "strict")] == ["dask"]
    assert refusing(diffs, "warn") == []


@pytest.mark.parametrize("pkg", OPTIONAL)
def test_an_optional_package_missing_on_either_side_is_listed_not_refused(pkg):
    there = compare(HEAD, host(**{pkg: None}))
    here = compare({**HEAD, pkg: None}, HEAD)
    assert there == [Difference(pkg, HEAD[pkg], None, False)]
    assert here == [Difference(pkg, None, HEAD[pkg], False)]
    assert refusing(there + here, "strict") == []


def test_a_package_only_one_side_reports_counts_as_missing_on_the_other():
    assert compare(HEAD, {k: v for k, v in HEAD.items() if k != "toolz"}) == [Difference("toolz", "1.0.0", None, True)]


def test_table_has_head_then_one_column_per_host_and_what_strict_does():
    lines = table({"ws2": compare(HEAD, host(numpy="2.2.0")),
                   "ws3": compare(HEAD, host(distributed=None, clusterctl="0.0.9")),
                   "ws4": []})
    cells = [line.split() for line in lines]
    assert cells[0] == ["package", "head", "ws2", "ws3", "strict"]  # ws4 does not differ: no column
    assert cells[1:] == [
        ["clusterctl", "0.1.0", "0.1.0", "0.0.9", "refuses"],
        ["distributed", "2026.8.0", "2026.8.0", "MISSING", "refuses"],
        ["numpy", "2.3.0", "2.2.0", "2.3.0", "warns"],
    ]
    assert len({line.index("head") for line in lines[:1]}) == 1 and all(line == line.rstrip() for line in lines)


def test_advice_names_what_to_install_where():
    assert advice(Difference("distributed", "2026.8.0", None, True), "/opt/py") == \
        "distributed is missing here, 2026.8.0 on the head: install distributed==2026.8.0 into /opt/py"
    assert advice(Difference("python", "3.11.9.final.0", "3.12.1.final.0", True), "/opt/py") == \
        "python 3.12 here, 3.11 on the head: point `python:` at a Python 3.11"


def test_the_lists_are_dasks_and_the_probe_reports_what_get_versions_reports():
    assert REQUIRED == tuple(dask_versions.required_packages)
    assert OPTIONAL == tuple(dask_versions.optional_packages)
    assert probe.DASK_PACKAGES == REQUIRED + OPTIONAL
    mine = probe.versions()
    assert {k: v for k, v in mine.items() if k != "clusterctl"} == dask_versions.get_versions()["packages"]
    assert mine["clusterctl"] is not None


# -- prepare and revive: the comparison's place in a start (ssh steps scripted) -----------------

def cfg_of(tmp_path: Path, mode: str = "strict"):
    text = (f"versions: {mode}\nhosts:\n  - name: ws2\n    address: 127.0.0.2\n  - name: ws3\n    address: 127.0.0.3\n"
            "workers:\n  - at: {ws2: 1, ws3: 1}\n")
    return parse_config(text, source=tmp_path / "cluster.yaml")


@pytest.fixture
def scripted(monkeypatch):
    """fleet's ssh steps replaced: `reports[host]` is what that host's install answers."""
    reports: dict[str, dict | None] = {}
    calls: list[str] = []
    monkeypatch.setattr(fleet, "_install", lambda cfg, name, payload, warm=True: reports[name])
    monkeypatch.setattr(fleet, "_payload", lambda cfg: {})
    monkeypatch.setattr(fleet, "_abandon", lambda cfg, hosts, answered=(): calls.append("abandon"))
    monkeypatch.setattr(fleet, "sweep", lambda cfg, name, warm=False: calls.append(f"sweep {name}"))
    monkeypatch.setattr(fleet.ssh, "secure_control_dir", lambda cfg, create: None)
    monkeypatch.setattr(fleet, "_checked", {})
    head = probe.versions()
    reports.update(ws2=dict(head), ws3=dict(head))
    return reports, calls, head


def test_prepare_refuses_under_strict_naming_the_hosts_then_the_table(tmp_path, scripted):
    reports, calls, head = scripted
    reports["ws3"] = {**head, "dask": "1.0.0", "numpy": "0.1"}
    with pytest.raises(ClusterError) as info:
        fleet.prepare(cfg_of(tmp_path))
    first, *lines = str(info.value).splitlines()
    assert "'ws3' (127.0.0.3)" in first and "dask differ" in first and "ws2" not in first
    assert "versions: warn" in first
    assert lines[0].split() == ["package", "head", "ws3", "strict"]
    assert [ln.split()[0::3] for ln in lines[1:]] == [["dask", "refuses"], ["numpy", "warns"]]
    assert calls == ["abandon"] and fleet._checked == {}


def test_prepare_under_warn_starts_and_reports_each_differing_host(tmp_path, scripted):
    reports, calls, head = scripted
    reports["ws3"] = {**head, "clusterctl": "0.0.9"}
    told: list[tuple[str, str]] = []
    assert fleet.prepare(cfg_of(tmp_path, "warn"), on_differ=lambda h, t: told.append((h, t))) == {}
    assert [h for h, _ in told] == ["ws3"]
    assert told[0][1].splitlines()[1].split() == ["clusterctl", head["clusterctl"], "0.0.9", "refuses"]
    assert calls == []


def test_prepare_under_strict_still_reports_differences_that_only_warn(tmp_path, scripted):
    reports, _, head = scripted
    reports["ws2"] = {**head, "numpy": "0.1"}
    told: list[str] = []
    fleet.prepare(cfg_of(tmp_path), on_differ=lambda h, t: told.append(h))
    assert told == ["ws2"]


def test_a_probe_without_a_versions_report_is_an_older_clusterctl(tmp_path, scripted):
    reports, _, _ = scripted
    reports["ws2"] = None
    with pytest.raises(ClusterError, match="'ws2'.*clusterctl differ"):
        fleet.prepare(cfg_of(tmp_path))


def test_revive_compares_again_only_a_changed_report(tmp_path, scripted):
    reports, calls, head = scripted
    cfg = cfg_of(tmp_path, "strict")
    fleet.prepare(cfg)
    assert len(fleet._checked) == 2
    told: list[str] = []
    fleet.revive(cfg, "ws2", on_differ=lambda h, t: told.append(h))  # same report: cached, no comparison
    assert calls == ["sweep ws2"] and told == []
    reports["ws2"] = {**head, "pandas": "0.0.1"}  # updated while away, only a warning
    fleet.revive(cfg, "ws2", on_differ=lambda h, t: told.append(h))
    assert told == ["ws2"] and calls == ["sweep ws2", "sweep ws2"]
    reports["ws3"] = {**head, "distributed": "0.0.1"}  # reinstalled while away with another Dask
    with pytest.raises(ClusterError, match="'ws3'.*distributed differ"):
        fleet.revive(cfg, "ws3")
    assert calls == ["sweep ws2", "sweep ws2"], "a refused host is not swept nor started"
