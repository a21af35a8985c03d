"""The fleet's machines (HostConfig) and the address checks every model shares.

A host is named once in `hosts:` and referred to by `at:`; `localhost` is always this machine.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import Field, field_validator

from .base import NAME_RE, Bool, Int, Model, _check_env

LOCAL_HOST = "localhost"  # the head: always known, never reached over SSH
LOCAL_ADDRESSES = {"localhost", "127.0.0.1", "::1"}
SSH_OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*=[^\s]+$")


class HostConfig(Model):
    """One workstation of the fleet and how to reach it."""

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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid host name; use letters, digits, '_', '.', '-'")
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

    @property
    def remote(self) -> bool:
        return self.ssh if self.ssh is not None else self.address.lower() not in LOCAL_ADDRESSES


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
