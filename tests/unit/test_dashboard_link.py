"""The dashboard link `up`, `status` and the ledger show honours Dask's distributed.dashboard.link.

A template that does not format gives the default link and a warning (as Dask's own scheduler
does): the link is a convenience, computed on every ledger write, and must never fail one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest

from clusterctl.plan.specs import dashboard_url
from clusterctl.topology import parse_config

PROXY = "/user/{JUPYTERHUB_USER}/proxy/{port}/status"


@pytest.fixture
def cfg():
    return parse_config("name: lab\nscheduler:\n  host: 127.0.0.1\n  dashboard_port: 8790\n")


def test_default_link(cfg):
    with dask.config.set({"distributed.dashboard.link": "{scheme}://{host}:{port}/status"}):
        assert dashboard_url(cfg) == "http://127.0.0.1:8790/status"
        assert dashboard_url(cfg, 41234) == "http://127.0.0.1:41234/status"  # the port it really got
        assert dashboard_url(parse_config("scheduler:\n  host: '::'\n")) == "http://[::1]:8787/status"
    assert dashboard_url(parse_config("scheduler:\n  dashboard: false\n")) is None


def test_proxy_template_with_an_environment_variable(cfg, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "ann")
    with dask.config.set({"distributed.dashboard.link": PROXY}):
        assert dashboard_url(cfg, 41234) == "/user/ann/proxy/41234/status"
    with dask.config.set({"distributed.dashboard.link": "https://hub.example/{host}-{port}/{scheme}"}):
        assert dashboard_url(cfg) == "https://hub.example/127.0.0.1-8790/http"


def test_a_tls_dashboard_is_https(cfg):
    with dask.config.set({"distributed.scheduler.dashboard.tls.cert": "/etc/cert.pem"}):
        assert dashboard_url(cfg) == "https://127.0.0.1:8790/status"


@pytest.mark.parametrize("template, why", [
    (PROXY, "names JUPYTERHUB_USER, which is not set"),
    ("{scheme}://{host}:{port/status", "does not format"),
    ("{0}/status", "does not format"),
])
def test_a_bad_template_falls_back_to_the_default_with_a_warning(cfg, monkeypatch, template, why):
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    with dask.config.set({"distributed.dashboard.link": template}), pytest.warns(UserWarning) as caught:
        assert dashboard_url(cfg) == "http://127.0.0.1:8790/status"
    (message,) = [str(w.message) for w in caught]
    assert why in message and template in message and "showing http://127.0.0.1:8790/status" in message
    assert "\n" not in message


def _fresh(tmp_path, files: dict[str, str], **env: str) -> subprocess.CompletedProcess:
    """dashboard_url in a new process (as the supervisor runs it) whose Dask config is these files."""
    d = tmp_path / "dask"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    code = ("import sys, json, warnings; warnings.simplefilter('always')\n"
            "from clusterctl.topology import parse_config\nfrom clusterctl.plan import specs\n"
            "before = 'dask' in sys.modules\n"
            "cfg = parse_config('scheduler:\\n  host: 127.0.0.1\\n  dashboard_port: 8790\\n')\n"
            "links = [specs.dashboard_url(cfg, 40000), specs.dashboard_url(cfg, 40001)]\n"
            "print(json.dumps([before, *links, len(specs._DASK_CONFIG_ERROR), 'dask' in sys.modules]))\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DASK_") and k != "JUPYTERHUB_USER"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**clean, "HOME": str(tmp_path), "DASK_ROOT_CONFIG": str(tmp_path / "etc"),
                               "DASK_CONFIG": str(d), **env})


def test_the_users_yaml_is_read_lazily_in_a_fresh_process(tmp_path):
    res = _fresh(tmp_path, {"dask.yaml": f"distributed:\n  dashboard:\n    link: '{PROXY}'\n"},
                 JUPYTERHUB_USER="bob")
    assert json.loads(res.stdout) == [False, "/user/bob/proxy/40000/status", "/user/bob/proxy/40001/status", 0,
                                      True], res.stderr
    res = _fresh(tmp_path, {}, DASK_DISTRIBUTED__DASHBOARD__LINK="http://proxy/{port}")
    assert json.loads(res.stdout)[1:3] == ["http://proxy/40000", "http://proxy/40001"], res.stderr


def test_a_malformed_dask_config_gives_the_default_and_one_warning(tmp_path):
    res = _fresh(tmp_path, {"bad.yaml": "distributed: {dashboard: [\n"})
    assert json.loads(res.stdout)[1:4] == ["http://127.0.0.1:40000/status", "http://127.0.0.1:40001/status", 1], \
        res.stderr  # one failed import, not one per ledger write
    warned = [x for x in res.stderr.splitlines() if "cannot read the dask config" in x]
    assert len(warned) == 2 and "bad.yaml" in warned[0] and "is malformed" in warned[0]


def test_without_any_dask_config_dask_is_not_imported(tmp_path):
    """The supervisor's first ledger write comes before the scheduler starts: with no Dask config
    file and no DASK_* variable on the way to the link (clusterctl's own tuning ones are not), no
    dask.config import (~50 ms) delays `up`."""
    res = _fresh(tmp_path, {"notes.txt": "distributed: {dashboard: {link: x}}\n"},
                 DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL="500ms", DASK_DISTRIBUTED__COMM__RETRY__COUNT="2")
    assert json.loads(res.stdout) == [False, "http://127.0.0.1:40000/status", "http://127.0.0.1:40001/status", 0,
                                      False], res.stderr
    res = _fresh(tmp_path, {}, DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CERT="/etc/c.pem")
    assert json.loads(res.stdout)[1] == "https://127.0.0.1:40000/status", res.stderr


def test_the_presence_check_looks_where_dask_looks(tmp_path, monkeypatch):
    from clusterctl.plan.specs import _LINK_KEYS, _dask_config_may_set

    for k in [k for k in os.environ if k.startswith("DASK_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DASK_ROOT_CONFIG", str(tmp_path / "etc"))
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "mine"))
    ours = [p for p in dask.config._get_paths() if p.startswith(str(tmp_path))]
    assert len(ours) == 3  # /etc/dask's stand-in, ~/.config/dask, $DASK_CONFIG
    assert not _dask_config_may_set(_LINK_KEYS)
    for path in ours:
        os.makedirs(path)
        (Path(path) / "x.yml").write_text("{}\n")
        assert _dask_config_may_set(_LINK_KEYS), path
        (Path(path) / "x.yml").unlink()
        assert not _dask_config_may_set(_LINK_KEYS)
    monkeypatch.setenv("DASK_DISTRIBUTED", "{}")
    assert _dask_config_may_set(_LINK_KEYS)
