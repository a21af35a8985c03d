"""Loopback control channel between the CLI and the running supervisor.

HTTP on 127.0.0.1 with a random port; every request carries the token from
``<state>/control.token`` (mode 0600) as a bearer token, compared in constant
time. A request without it, or with a wrong one, gets 401 and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from ..errors import ClusterError

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]
MAX_BODY = 64 * 1024


class ControlServer:
    """Serves POST /<command> with a JSON body; ``handle(command, body)`` returns the reply."""

    def __init__(self, token: str, handle: Handler, host: str = "127.0.0.1"):
        self.token = token
        outer = self

        class _Request(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: events go to the event log
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                got = self.headers.get("Authorization", "")
                want = f"Bearer {outer.token}"
                return hmac.compare_digest(got.encode(), want.encode())

            def do_GET(self) -> None:  # noqa: N802
                self._dispatch({})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorised():  # before reading anything a stranger sent
                    return self._reply(401, {"error": "missing or wrong control token"})
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    return self._reply(413, {"error": "request body too large"})
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except ValueError:
                    return self._reply(400, {"error": "request body is not a JSON object"})
                self._dispatch(body)

            def _dispatch(self, body: dict[str, Any]) -> None:
                if not self._authorised():
                    return self._reply(401, {"error": "missing or wrong control token"})
                command = self.path.strip("/").split("?")[0]
                try:
                    reply = handle(command, body)
                except ClusterError as e:
                    return self._reply(400, {"error": str(e)})
                except Exception as e:  # noqa: BLE001 - the supervisor must not die of a request
                    return self._reply(500, {"error": f"{type(e).__name__}: {e}"})
                self._reply(200, reply)

        self.httpd = ThreadingHTTPServer((host, 0), _Request)
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        # shutdown() waits for the loop's next poll: at the default 0.5 s that was most of
        # the time between the cluster's last process stopping and `down` returning.
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def request(address: str, token: str | None, command: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Send one command; raise ClusterError with the supervisor's own words on refusal."""
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(f"http://{address}/{command}", data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            msg = e.reason
        raise ClusterError(f"supervisor refused `{command}`: {msg}") from None
    except (OSError, ValueError) as e:
        raise ClusterError(f"cannot reach the supervisor at {address}: {e}") from None
