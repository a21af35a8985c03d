"""The walkthrough's own script, unmodified, against `clusterctl up` with the default cluster.yaml,
after `eval "$(clusterctl env)"` (the cluster speaks TLS only, loopback included).

It hard-codes 127.0.0.1:8786, and tests must never take the default ports on
the shared machine, so the whole run happens in a private network namespace
(its own loopback), where 8786/8787 belong to this test alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import missing_tool, processes_under

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent.parent / "data" / "walkthrough_full_source.py"


def _netns_works() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_walkthrough_script_runs_unmodified_against_default_cluster(tmp_path):
    reason = _netns_works()
    if reason:
        missing_tool(reason)
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    shutil.copy(SCRIPT, tmp_path / "walkthrough.py")
    py = sys.executable
    # The script ends with df.tail() (a notebook habit); print the shape afterwards to prove it finished.
    script = f"""
set -u
ip link set lo up
{py} -m clusterctl up || exit 10
eval "$({py} -m clusterctl env)" || exit 11  # TLS by default: the client's certificate, scheme tls
{py} -c 'exec(open("walkthrough.py").read()); print("SHAPE", df.shape, float(df.iloc[-1, 1]))'
rc=$?
{py} -m clusterctl down
exit $rc
"""
    env = dict(os.environ)
    env.pop("CLUSTERCTL_CONFIG", None)
    try:
        res = subprocess.run(["unshare", "--net", "bash", "-c", script], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=220)
    finally:
        left = processes_under(tmp_path)
        for p in left:
            p.kill()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "SHAPE (1200, 3)" in res.stdout
    pi = float(res.stdout.split("SHAPE (1200, 3)")[1].split()[0])
    assert abs(pi - 3.14159) < 0.01
    assert not left, f"left behind: {left}"
