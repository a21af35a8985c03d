"""desired.json: the size set with `scale`, and what happens when the file is damaged."""

from __future__ import annotations

import json

import pytest

from clusterctl.supervisor.desired import DesiredSize


@pytest.mark.parametrize("text, why", [
    ("{", "unreadable"),
    ("[]", "no 'groups' object"),
    ('{"groups": []}', "no 'groups' object"),
    ('{"groups": {"default": {"count": "3", "config_count": 2}}}', "malformed record"),
    ('{"groups": {"default": {"count": -1, "config_count": 2}}}', "malformed record"),
    ('{"groups": {"default": {"count": true, "config_count": 2}}}', "malformed record"),
    ('{"groups": {"default": {"count": 99999, "config_count": 2}}}', "malformed record"),
    ('{"groups": {"default": [3]}}', "malformed record"),
    ('{"groups": {"default": {"count": 3}}}', "malformed record"),
])
def test_a_damaged_file_is_ignored_with_a_reason(tmp_path, text, why):
    (tmp_path / "desired.json").write_text(text)
    size = DesiredSize(tmp_path)
    assert size.load({"default": 2}) == {}
    assert why in size.problem


def test_a_recorded_size_applies_until_the_topology_changes(tmp_path):
    size = DesiredSize(tmp_path)
    assert size.load({"default": 2}) == {} and size.problem is None  # no file: nothing to say
    size.save({"default": 5}, {"default": 2})
    assert size.load({"default": 2}) == {"default": 5}
    assert size.load({"default": 3}) == {}  # cluster.yaml edited since: it wins
    assert (tmp_path / "desired.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "desired.json").read_text())["groups"]["default"]["count"] == 5
