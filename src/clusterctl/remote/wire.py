"""The direct route's wire format, shared by a host's fork server and the head (standard library only).

A remote worker started the direct way is one ``ssh -W 127.0.0.1:PORT`` over the host's shared
connection, to the fork server's loopback port: no remote shell, no agent interpreter. Both ends
know a token the server wrote to a 0600 file that only the head's ssh reads back; neither sends it::

    head -> server   {"hello": Nc}
    server -> head   {"nonce": Ns, "proof": proof(token, "server", Nc, Ns)}
    head -> server   {"auth": proof(token, "client", Ns, Nc), "launch": "worker", "args": [...], "env": {...}, ...}
    server -> head   {"how": "fork" | "exec"}   or {"refused": why}, then the connection closes
    server -> head   the Dask process's stdout and stderr, as they come
    head -> server   a newline every few seconds: the lifeline; its end or its silence stops the process
    server -> head   TRAILER {"exit": code, "pid": pid}, once the process and its group are gone

The head proves the token before the server starts anything (any local user of that host can reach
its loopback port), and the server proves it before the head sends the environment (which may hold a
secret from a group's ``env:``): a port reused by another program gets neither.
"""

from __future__ import annotations

import hashlib
import hmac
import json

ROUTE = "forkserver.route"  # in the host's workdir, 0600: {"port", "token", "pid"}
TRAILER = b"\x00clusterctl-exit "  # a NUL: never in a Dask process's text output
MAX_LINE = 1 << 20
# On a lifeline (the agent's stdin, or a direct connection once its process runs), instead of the
# heartbeat's newline: the supervisor judged the process hung; kill its group now, without the
# grace (a SIGSTOPped process cannot act on SIGTERM, and its name blocks its replacement).
KILL = b"!"


def proof(token: str, *parts: str) -> str:
    return hmac.new(token.encode(), ":".join(parts).encode(), hashlib.sha256).hexdigest()


def same(a: object, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


def answer(token: str, hello: str, said: dict) -> str | None:
    """The head's ``auth`` for a server that said ``said`` ({"nonce", "proof"}) to its ``hello``, or None
    when that proof is not the token's: then it must be told nothing."""
    nonce = str(said.get("nonce"))
    if not same(said.get("proof"), proof(token, "server", hello, nonce)):
        return None
    return proof(token, "client", nonce, hello)


def line(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def trailer(code: int, pid: int) -> bytes:
    return TRAILER + line({"exit": code, "pid": pid})


def parse_trailer(tail: bytes) -> tuple[bytes, dict | None]:
    """Split what ended a stream into (output before the trailer, the trailer's message or None)."""
    at = tail.rfind(TRAILER)
    if at < 0 or not tail.endswith(b"\n"):
        return tail, None
    try:
        msg = json.loads(tail[at + len(TRAILER):])
    except ValueError:
        return tail, None
    return tail[:at], msg if isinstance(msg, dict) else None
