"""The fleet's machines (HostConfig) and the address checks every model shares.

A host is named once in `hosts:` and referred to by `at:`; `localhost` is always this machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import Num, NAME_RE, Bool, FieldError, Int, Model, _check_env
from .limits import PRIVILEGED_PORTS
from .owner import PolicyKeys

LOCAL_HOST = "localhost"  # the head: always known, never reached over SSH
# Addresses that are this machine itself, reached without SSH by default. Other loopback
# addresses (127.0.0.2, ...) are SSH destinations: that is how one machine plays several.
LOCAL_ADDRESSES = {"localhost", "127.0.0.1", "::1"}
SSH_OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*=[^\s]+$")


class HostConfig(PolicyKeys):
    """One workstation of the fleet and how to reach it (and its own `owner:`, `hours:`, `nice:`, `reserve:`)."""

    name: str = Field(description="what `at:` calls it")
    address: str = Field(description="what `ssh` connects to: an IP, a DNS name or a ~/.ssh/config alias")
    user: str | None = Field(None, description="SSH user; default: ~/.ssh/config's, or yours")
    port: Int | None = Field(None, ge=1, le=65535, description="SSH port; default: ~/.ssh/config's, or 22")
    identity_file: str | None = None
    python: str = Field("python3", description="interpreter there with distributed and clusterctl")
    workdir: str | None = Field(None, description="directory there for TLS files and scratch space")
    bind: str | None = Field(None, description="address its processes listen on; default: address")
    env: dict[str, str] = Field(default_factory=dict)
    ssh_options: list[str] = Field(default_factory=list, description="extra `-o Key=Value` options")
    ssh: Bool | None = Field(None, description="default: no SSH for localhost/127.0.0.1/::1")
    required: Bool = Field(False, description="`up` fails when this host cannot be reached (else: degraded)")
    retry_max: Num = Field(30.0, gt=0, le=3600, description="cap, seconds, between probes of it while unreachable")
    lifeline_timeout: Num = Field(
        20.0, ge=0, le=3600,
        description="its agents stop their process after this long without the supervisor's heartbeat (0: off)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid host name; use letters, digits, '_', '.', '-'")
        if v.lower() == LOCAL_HOST:
            raise ValueError(
                f"{v!r} is reserved: it always names this machine, where workers without `at:` run "
                "(no SSH, no entry needed); name this host after its machine, such as 'ws1'"
            )
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v.startswith("-") or any(c.isspace() for c in v) or not v:
            raise ValueError(f"{v!r} is not a host address; use an IP, a DNS name or an ~/.ssh/config alias")
        return v

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return None if v is None else _check_host(v)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", v):
            raise ValueError(f"{v!r} is not a user name")
        return v

    @field_validator("ssh_options")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        for opt in v:
            if not SSH_OPTION_RE.match(opt):
                raise ValueError(f"{opt!r} is not an ssh option; write Key=Value, such as ConnectTimeout=5")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        return _check_env(v)

    @model_validator(mode="after")
    def _bind_reachable(self) -> HostConfig:
        """A machine reached over SSH listens where the others can reach it, not on its own loopback."""
        if self.bind and self.remote and is_loopback(self.bind) and not is_loopback(self.address):
            raise FieldError(
                f"{self.bind!r} is loopback on host {self.name!r} ({self.address}), which is another machine: "
                "what runs there would listen and dial only inside it, out of reach of the scheduler and "
                f"the workers; write {self.name}'s address on the cluster's network (e.g. its IP) or drop "
                "`bind:` to use `address:`",
                ("bind",),
            )
        return self

    @property
    def remote(self) -> bool:
        return self.ssh if self.ssh is not None else not is_this_machine(self.address)


def is_this_machine(address: str) -> bool:
    """True for the names of this machine that need no SSH: localhost, 127.0.0.1, ::1, in any spelling.

    ('[::1]', 'LOCALHOST', 'localhost.', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'.) Other loopback
    addresses such as 127.0.0.2 are reached over SSH unless `ssh: false` says otherwise."""
    host = address.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.removesuffix(".")  # 'localhost.' is the fully qualified 'localhost'
    if host in LOCAL_ADDRESSES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip) in LOCAL_ADDRESSES


def _check_host(v: str) -> str:
    v = v.strip()
    if v.startswith("[") and v.endswith("]"):  # '[::1]': brackets belong to host:port, not the host
        v = v[1:-1]
    if not v:
        raise ValueError("host is empty; use an address such as 127.0.0.1")
    if v in ("0.0.0.0", "::", "*"):
        return v  # allowed only with insecure: true (checked with the whole config)
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if re.match(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$", v):
        return v
    raise ValueError(f"{v!r} is not an IP address or host name")


def is_loopback(host: str) -> bool:
    """True only for addresses no other machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


CAP_NET_BIND_SERVICE = 10  # the capability that lets a non-root process bind low ports (Linux)
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def first_unprivileged_port() -> int:
    """The lowest port this process may bind without privileges it lacks; 0 when it may bind any.

    Root may bind any port; on Linux so may a process with CAP_NET_BIND_SERVICE, and the
    kernel's net.ipv4.ip_unprivileged_port_start moves the limit (containers often set 0)."""
    if sys.platform in ("win32", "darwin") or not hasattr(os, "geteuid") or os.geteuid() == 0:
        return 0  # Windows, and macOS since 10.14, let anyone bind them
    if not sys.platform.startswith("linux"):
        return PRIVILEGED_PORTS
    if _has_capability(CAP_NET_BIND_SERVICE):
        return 0
    return _read_int(UNPRIVILEGED_PORT_START, PRIVILEGED_PORTS)


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            caps = next((line.split()[1] for line in f if line.startswith("CapEff:")), "0")
        return bool(int(caps, 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        return False


def _read_int(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default
