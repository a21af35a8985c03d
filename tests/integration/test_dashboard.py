"""The dashboard in a real browser, the convergence plot, --json, and `env` for a plain Client().

Bokeh draws the dashboard in JavaScript from a websocket, into shadow DOM, so
``chromium --dump-dom`` (even with --virtual-time-budget, whose clock does not
wait for websocket messages) captures an empty page. The test therefore drives
headless Chromium over its DevTools pipe (file descriptors 3 and 4; no port):
load, wait for a condition in the page, read its text, take a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import CLI, kill_all, missing_tool, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"  # gitignored; CI keeps what the tests saw
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORKERS = ("default-0", "default-1")
JOB_TASKS = 60

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
    # Loopback only: no name resolves, so nothing but 127.0.0.1 can be fetched.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=direct://",
]

# All text of the page, shadow roots included (where Bokeh renders), without styles and scripts.
PAGE_TEXT = """(() => {
  const out = [];
  const walk = n => {
    if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.childNodes) {
      if (c.nodeType === Node.TEXT_NODE) out.push(c.textContent);
      else if (!['STYLE', 'SCRIPT'].includes(c.nodeName)) walk(c);
    }
  };
  walk(document.body || document);
  return out.join(' ').split(/\\s+/).join(' ');
})()"""
BOKEH_RENDERED = """window.Bokeh !== undefined && Bokeh.documents.length > 0
  && document.querySelectorAll('[data-root-id]').length > 0
  && [...document.querySelectorAll('[data-root-id]')].every(e => e.children.length > 0)"""
BOKEH_MODELS = "Bokeh.documents.flatMap(d => [...d.all_models])"
# Plot titles are drawn on canvas, not in the DOM: read them from the Bokeh models.
PLOT_TITLES = f"{BOKEH_MODELS}.filter(m => m.type === 'Title').map(m => m.text)"
TASK_STREAM = f"{BOKEH_MODELS}.filter(m => m.type === 'ColumnDataSource' && 'worker_thread' in m.data)"
CANVASES = """(() => {
  let n = 0;
  const walk = root => { for (const e of root.querySelectorAll('*')) {
    if (e.tagName === 'CANVAS' && e.width > 0 && e.height > 0) n++;
    if (e.shadowRoot) walk(e.shadowRoot);
  } };
  walk(document);
  return n;
})()"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class Chromium:
    """Headless Chromium in its own process group, driven over --remote-debugging-pipe.

    ``close()`` (also on error, via ``with``) asks politely, then SIGKILLs the whole group."""

    def __init__(self, exe: str, home: Path, width: int = 1400, height: int = 900):
        self.profile = home / "profile"
        self.profile.mkdir(parents=True)
        self.log_path = home / "chromium.log"
        cmd_read, self._cmd = os.pipe()  # we write commands; Chromium reads fd 3
        self._res, res_write = os.pipe()  # Chromium writes fd 4; we read
        # Move the child's ends above 10, so dup2 onto 3 and 4 cannot clobber one with the other.
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_read, res_write)]
        os.close(cmd_read)
        os.close(res_write)

        def pipe_fds() -> None:  # in the child, before exec
            os.dup2(child[0], 3)
            os.dup2(child[1], 4)

        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home), XDG_CACHE_HOME=str(home))
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                 "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                preexec_fn=pipe_fds, close_fds=False,  # close_fds would close 3 and 4 after the dup2
                start_new_session=True,
            )
        for fd in child:
            os.close(fd)
        self._buf = b""
        self._id = 0
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()  # `with` has not begun: nobody else would
            raise

    def call(self, method: str, session: bool = False, timeout: float = 20.0, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        try:
            os.write(self._cmd, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise AssertionError(f"Chromium exited; {self.log_path}:\n{self.log_tail()}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._id:  # anything else is an event we did not ask about
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def _receive(self, deadline: float, method: str) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"Chromium did not answer {method} in time; {self.log_path}:\n{self.log_tail()}")
            if select.select([self._res], [], [], left)[0]:
                chunk = os.read(self._res, 1 << 20)
                if not chunk:
                    raise AssertionError(f"Chromium closed its pipe; {self.log_path}:\n{self.log_tail()}")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 20.0, what: str = "the page") -> None:
        """Poll until the JS ``expression`` is true in the page (fail after ``timeout``)."""
        wait_for(lambda: self.evaluate(expression), timeout, interval=0.2, what=what)

    def load(self, url: str, ready: str, timeout: float = 20.0, what: str = "the page") -> str:
        """Navigate, wait until the JS expression ``ready`` is true; return the page's text."""
        self.call("Page.navigate", session=True, url=url)
        self.wait(ready, timeout, f"{what} at {url}")
        return self.evaluate(PAGE_TEXT)

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(line for line in text if "dbus" not in line)[-4000:] or "(empty)"  # no bus here: noise

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of this browser: its group, or anything naming its profile."""
        found = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if p.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if os.getpgid(p.pid) == self.popen.pid or str(self.profile) in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    def close(self) -> None:
        try:
            if self.popen.poll() is None:
                self.call("Browser.close", timeout=5)
                self.popen.wait(timeout=5)
        except (AssertionError, subprocess.TimeoutExpired):
            pass  # forced below
        finally:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)  # renderers and zygotes stay in the group
            except ProcessLookupError:
                pass
            kill_all(self.leftovers())
            if self.popen.poll() is None:
                self.popen.wait(timeout=5)
            for fd in (self._cmd, self._res):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_dashboard_in_chromium(cluster, tmp_path, monkeypatch):
    exe = find_chromium()
    if exe is None:
        missing_tool("Chromium not found: install Debian's `chromium` package (apt-get install chromium)")
    cluster.cli("up", check=True)

    res = cluster.cli("dashboard", check=True)
    url = res.stdout.strip()
    assert url == f"http://127.0.0.1:{cluster.dashboard_port}/status" == cluster.ledger()["scheduler"]["dashboard"]

    # --open goes through webbrowser, which honours $BROWSER.
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "browser.sh"
    opener.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    opener.chmod(0o755)
    monkeypatch.setenv("BROWSER", f"{opener} %s")
    assert cluster.cli("dashboard", "--open", check=True).stdout.strip() == url
    assert opened.read_text().strip() == url

    base = url.rsplit("/", 1)[0]
    tasks = f"{TASK_STREAM}.flatMap(m => Array.from(m.data.name)).filter(n => n === 'montecarlo').length"
    with Chromium(exe, tmp_path / "chromium") as chrome:
        # The task stream records tasks only from the moment a dashboard first shows it: open, then run.
        chrome.load(url, BOKEH_RENDERED, what="the status page's plots")
        cluster.cli("run", "montecarlo", "--tasks", str(JOB_TASKS), "--max-points", "300000", "--batch-points", "0",
                    "--out", str(tmp_path / "pi.csv"), check=True)
        chrome.wait(f"{tasks} >= {JOB_TASKS}", what=f"the job's {JOB_TASKS} tasks in the task stream")
        titles = chrome.evaluate(PLOT_TITLES)
        assert {"Task Stream", "Bytes stored per worker"} <= set(titles), titles
        assert any(t.startswith("Progress") for t in titles), titles
        assert any(t.startswith("Bytes stored: ") and t.endswith("iB") for t in titles), titles
        assert chrome.evaluate(CANVASES) >= 5, "the plots are drawn"
        shot = chrome.screenshot(ARTIFACTS / "dashboard-status.png")
        assert png_size(shot) == (1400, 900) and len(shot) > 20_000, "a rendered page, not a bare navbar"

        # /workers is Bokeh's table (rendered by JS); /info/main/workers.html is plain HTML from the server.
        text = chrome.load(base + "/workers", f"{BOKEH_RENDERED} && {' && '.join(f'{PAGE_TEXT}.includes({w!r})' for w in WORKERS)}",
                             what="both workers in the workers table")
        assert all(w in text for w in WORKERS) and "nthreads" in text
        chrome.screenshot(ARTIFACTS / "dashboard-workers.png")

        text = chrome.load(base + "/info/main/workers.html", "document.readyState === 'complete'")
        assert all(w in text for w in WORKERS), text[:500]
        assert f"tls://127.0.0.1:{cluster.port}" in text  # the page names its scheduler
        html = chrome.evaluate("document.documentElement.outerHTML")
        assert all(re.search(rf"<td>\s*{w}\s*</td>", html) for w in WORKERS), "server-rendered, in the name column"
    assert chrome.popen.returncode is not None
    assert chrome.leftovers() == [], "Chromium left processes behind"


def test_run_plot_json_and_env_for_a_plain_client(cluster, tmp_path):
    cluster.cli("up", check=True)
    address = f"tls://127.0.0.1:{cluster.port}"  # TLS by default, loopback included (issue 22)

    res = cluster.cli("env", check=True)
    lines = res.stdout.strip().splitlines()
    assert lines[0] == f"export DASK_SCHEDULER_ADDRESS={address};"
    assert "export DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME=tls;" in lines
    assert "export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True;" in lines
    assert any(x.startswith("export DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=") for x in lines)
    plain = cluster.cli("env", "--plain", check=True).stdout.splitlines()
    assert plain[0] == f"DASK_SCHEDULER_ADDRESS={address}"

    # without them, a plain-TCP client is refused, as `doctor` explains (with the fix)
    from distributed import Client

    with pytest.raises(OSError) as refused:
        Client(f"tcp://127.0.0.1:{cluster.port}", timeout="5s")
    assert "reset by peer" in str(refused.value) or "Timed out trying to connect" in str(refused.value), refused.value
    doctor = cluster.cli("doctor").stdout
    assert "clients: this cluster speaks mutual TLS only" in doctor and 'eval "$(clusterctl env)"' in doctor

    # What a user types: unquoted eval, then a Client() given no address, and the walkthrough's own
    # Client("127.0.0.1:PORT"), no scheme: Dask's default scheme says tls.
    script = (
        "from distributed import Client\n"
        "with Client(timeout='20s') as c:\n"
        "    info = c.scheduler_info()\n"
        "    print(c.scheduler.address, sorted(w['name'] for w in info['workers'].values()))\n"
        f"with Client('127.0.0.1:{cluster.port}', timeout='20s') as c:\n"
        "    assert c.submit(sum, [1, 2]).result() == 3\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    shell = (f"eval $({' '.join(CLI)} env --file {cluster.config}) && "
             f"{sys.executable} -c \"$SCRIPT\"")
    proc = subprocess.run(["sh", "-c", shell], env=dict(env, SCRIPT=script), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{address} {list(WORKERS)}"

    plot = tmp_path / "plots" / "pi.png"
    csv = tmp_path / "pi.csv"
    res = cluster.cli("run", "montecarlo", "--tasks", "80", "--max-points", "500000", "--seed", "3",
                      "--out", str(csv), "--plot", str(plot), "--json", check=True)
    summary = json.loads(res.stdout)
    assert summary["tasks"] == 80 and summary["seed"] == 3
    assert summary["pi_points"] == 500_000 and abs(summary["pi"] - 3.14159) < 0.02
    assert summary["points"] > 500_000 and summary["seconds"] > 0
    assert summary["csv"] == str(csv) and summary["plot"] == str(plot)
    assert csv.exists()
    data = plot.read_bytes()
    width, height = png_size(data)
    assert width > height > 300 and len(data) > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(plot, ARTIFACTS / "convergence.png")


def test_commands_say_when_the_cluster_is_not_running(cluster):
    for args in (["dashboard"], ["env"], ["run", "montecarlo", "--tasks", "2"]):
        res = cluster.cli(*args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert res.stderr.strip().splitlines() == [f"error: cluster '{cluster.name}' is not running; start it with `clusterctl up`"]
        assert res.stdout == ""
    bad = cluster.cli("run", "montecarlo", "--plot", "pi.jpg")
    assert bad.returncode == 1 and "ending in .png" in bad.stderr and "Traceback" not in bad.stderr


def _get(url: str) -> tuple[int, dict, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def test_dashboard_is_mounted_after_the_scheduler_answers(cluster):
    """The scheduler starts without Bokeh; its preload mounts the pages moments later."""
    cluster.cli("up", check=True)
    base = f"http://127.0.0.1:{cluster.dashboard_port}"
    code, headers, body = _get(base + "/status")
    if code == 503:  # still importing Bokeh: the placeholder says so and asks to come back
        assert headers.get("Retry-After") == "1" and "reloads itself" in body
    else:
        assert code == 200
    wait_for(lambda: _get(base + "/status")[0] == 200, 30, what="the Bokeh status page")
    code, _, body = _get(base + "/status")
    assert "bokeh" in body.lower() and "Dask" in body
    assert _get(base + "/")[0] == 200  # Dask's redirect to /status came with the pages
    assert _get(base + "/workers")[0] == 200
    # The routes that were there from the start still answer.
    assert _get(base + "/health")[0] == 200
    assert json.loads(_get(base + "/clusterctl/workers.json")[2])["n_workers"] == 2
    assert _get(base + "/nonexistent-page")[0] == 404  # the placeholder is gone


def test_no_dashboard_means_no_pages_ever(cluster):
    cluster.write(scheduler_extra="dashboard: false\n")
    cluster.cli("up", check=True)
    base = f"http://127.0.0.1:{cluster.dashboard_port}"
    time.sleep(1.5)  # longer than the lazy mount takes: nothing may appear later either
    assert _get(base + "/status")[0] == 404
    assert _get(base + "/health")[0] == 200


def test_placeholder_until_bokeh_is_imported_then_the_pages():
    """scheduler_plugin.Dashboard on an in-process Scheduler, with the import held back."""
    import asyncio
    import threading

    from distributed import Scheduler
    from tornado.httpclient import AsyncHTTPClient

    from clusterctl.runtime.scheduler_plugin import Dashboard

    async def fetch(url: str):
        return await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=20)

    async def main() -> None:
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0", dashboard=False) as s:
            base = f"http://127.0.0.1:{s.http_server.port}"
            gate = threading.Event()
            dash = Dashboard(s)
            load = dash._load
            dash._load = lambda: (gate.wait(30), load())
            dash.start()
            r = await fetch(base + "/status")
            assert r.code == 503 and r.headers["Retry-After"] == "1" and dash.state == "starting"
            assert (await fetch(base + "/health")).code == 200
            gate.set()
            for _ in range(600):
                if dash.state != "starting":
                    break
                await asyncio.sleep(0.05)
            assert dash.state == "ready"
            r = await fetch(base + "/status")
            assert r.code == 200 and b"bokeh" in r.body.lower()

    asyncio.run(main())
