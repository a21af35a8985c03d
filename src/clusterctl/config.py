"""Load ``cluster.yaml`` safely and validate it once into typed models.

Every failure is a :class:`ConfigError` whose message names the file, the
line when known, the field path, the bad value and what would be accepted::

    >>> load_config("cluster.yaml")            # doctest: +SKIP
    ClusterConfig(name='walkthrough', ...)
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

MAX_FILE_BYTES = 1 << 20  # a topology is a page of YAML, not a megabyte
MAX_NODES = 100_000  # after alias expansion: stops "billion laughs" documents

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
BYTES_RE = re.compile(r"^\s*(\d+(\.\d+)?)\s*([kKmMgGtTpP]i?[bB]?|[bB])?\s*$")
MIN_MEMORY = 1 << 20  # a smaller nonzero limit is a unit slip ('512' meant '512MB')
RESERVED_GROUPS = {"scheduler"}  # the scheduler's own group in plans, ledger and status
MEMORY_HINT = (
    "use 'auto', a size such as '4GiB' or '512MB', a byte count, a fraction of RAM "
    "such as 0.5, or 0 for no limit"
)


class FieldError(ValueError):
    """A check on a whole model that blames one field inside it (for the message's path)."""

    def __init__(self, message: str, loc: tuple[Any, ...]):
        super().__init__(message)
        self.loc = loc


def _finite_number(v: Any) -> Any:
    # YAML turns `true` into a bool, which pydantic would take as 1; and .nan/.inf are no timeouts.
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is a boolean, not a number; write a number such as 1 or 2.5")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v!r} is not a finite number; write a number such as 1 or 2.5")
    return v


# Whole numbers must be written as numbers (no `true`, no '3', no 3.0); other numbers may be
# written 1e9 (which YAML 1.1 reads as text) but never as a boolean, .nan or .inf.
Int = StrictInt
Num = Annotated[float, BeforeValidator(_finite_number)]
Bool = StrictBool


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(Model):
    """How the supervisor treats a process that exits (supervision issue)."""

    policy: Literal["always", "on-failure", "never"] = "always"
    backoff_initial: Num = Field(0.5, gt=0, le=300, description="first delay, seconds")
    backoff_max: Num = Field(30.0, gt=0, le=3600, description="delay cap, seconds")
    min_uptime: Num = Field(5.0, ge=0, le=3600, description="a start counts as good after this")
    max_retries: Int = Field(5, ge=0, le=1000, description="restarts allowed within window")
    window: Num = Field(60.0, gt=0, le=86400, description="seconds over which retries count")
    unhealthy_grace: Num = Field(
        10.0, gt=0, le=3600, description="alive but unregistered for this long counts as failed"
    )


class SchedulerConfig(Model):
    host: str = "127.0.0.1"
    port: Int = Field(8786, ge=0, le=65535)
    dashboard_port: Int = Field(8787, ge=0, le=65535)
    dashboard: Bool = True
    idle_timeout: Num | None = Field(None, gt=0)
    restart: RestartPolicy = RestartPolicy()

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _check_host(v)

    @model_validator(mode="after")
    def _ports_differ(self) -> SchedulerConfig:
        if self.port and self.port == self.dashboard_port:
            raise FieldError(
                f"{self.dashboard_port} is also scheduler.port; give the dashboard another "
                f"port, such as {self.port + 1 if self.port < 65535 else self.port - 1}",
                ("dashboard_port",),
            )
        return self


class WorkerGroup(Model):
    name: str = "default"
    count: Int = Field(1, ge=1, le=1024)
    nthreads: Int | None = Field(None, ge=1, le=1024, description="default: dask's choice")
    memory_limit: str | int | float = Field("auto", description="'auto', bytes, '4GiB' or 0.5")
    resources: dict[str, Num] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    nanny: Bool = True
    host: str | None = Field(None, description="bind address; default: the scheduler's host")
    restart: RestartPolicy = RestartPolicy()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid group name; use letters, digits, '_', '.', '-' "
                "(starting with a letter or digit, at most 63 characters)"
            )
        if v in RESERVED_GROUPS:
            raise ValueError(f"{v!r} is reserved for the scheduler; name the group e.g. 'default'")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else _check_host(v)

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        """Accept only what `dask worker --memory-limit` reads the way the user meant."""
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"{v!r} is not a memory limit; {MEMORY_HINT}")
        if isinstance(v, str):
            text = v.strip()
            if text.lower() == "auto":
                return "auto"
            m = BYTES_RE.match(text)
            if not m:
                raise ValueError(f"{v!r} is not a size; {MEMORY_HINT}")
            if not m.group(3):  # a bare number written as text: same rules as a number
                v = float(m.group(1)) if m.group(2) else int(m.group(1))
            else:
                size = _size_in_bytes(float(m.group(1)), m.group(3))
                if 0 < size < MIN_MEMORY:
                    raise ValueError(
                        f"{v!r} is {int(size)} bytes, too small for a worker; "
                        "did you mean MB or GB? (0 means no limit)"
                    )
                return text.replace(" ", "")
        if not math.isfinite(v):
            raise ValueError(f"{v!r} is not a memory limit; {MEMORY_HINT}")
        if v < 0:
            raise ValueError(f"{v!r} is negative; {MEMORY_HINT}")
        if isinstance(v, float) and v > 1:
            # dask reads a float above 1 as bytes and truncates it: 2.5 would mean 2 bytes.
            if not v.is_integer():
                raise ValueError(
                    f"{v!r} is neither a fraction of RAM (0 to 1) nor a whole byte count; "
                    f"{MEMORY_HINT}"
                )
            v = int(v)
        if isinstance(v, int) and 1 < v < MIN_MEMORY:
            raise ValueError(
                f"{v!r} bytes is too small for a worker; did you mean '{v}MB'? (0 means no limit)"
            )
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        for key, amount in v.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"resource name {key!r} must be an identifier like GPU or MEM")
            if amount < 0:
                raise ValueError(f"resource {key}={amount!r} is negative; use 0 or more")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[Any, str] = {}
        for k, x in v.items():  # YAML gives 1 or true; the environment only holds text
            if not isinstance(k, str) or not k or "=" in k or "\0" in k:
                raise ValueError(
                    f"environment variable name {k!r} is not valid; use a name such as "
                    "OMP_NUM_THREADS (no '=')"
                )
            if isinstance(x, (dict, list)):
                raise ValueError(
                    f"{k}: {x!r} is not a single value; an environment variable holds text "
                    "such as '1' or 'on'"
                )
            text = "" if x is None else str(x).lower() if isinstance(x, bool) else str(x)
            if "\0" in text:
                raise ValueError(f"{k}: the value contains a NUL character")
            out[k] = text
        return out


class Timeouts(Model):
    startup: Num = Field(60.0, gt=0, le=3600, description="seconds to become healthy")
    shutdown: Num = Field(10.0, gt=0, le=3600, description="graceful stop before force")


class ClusterConfig(Model):
    name: str = "clusterctl"
    scheduler: SchedulerConfig = SchedulerConfig()
    workers: list[WorkerGroup] = Field(default_factory=lambda: [WorkerGroup(count=3)])
    state_dir: str = ".clusterctl"
    log_dir: str | None = None
    timeouts: Timeouts = Timeouts()
    python: str | None = Field(None, description="Python interpreter that has distributed")
    bin_dir: str | None = Field(None, description="directory holding the `dask` executable")
    insecure: Bool = Field(False, description="allow plain TCP beyond loopback")
    launch: Literal["concurrent", "sequential"] = Field(
        "concurrent",
        description="concurrent: start workers with the scheduler (they wait for it); "
        "sequential: only after it answers. A scheduler on port 0 is always sequential.",
    )

    # Resolved at load time, never read from YAML.
    source: Path | None = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid cluster name; use letters, digits, '_', '.', '-'")
        return v

    @field_validator("workers")
    @classmethod
    def _groups(cls, v: list[WorkerGroup]) -> list[WorkerGroup]:
        seen: dict[str, int] = {}
        for i, group in enumerate(v):
            if group.name in seen:
                raise FieldError(
                    f"{group.name!r} is already the name of workers[{seen[group.name]}]; "
                    "give every group a different name",
                    (i, "name"),
                )
            seen[group.name] = i
        return v

    # -- derived paths ---------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def state_path(self) -> Path:
        return (self.base_dir / os.path.expanduser(self.state_dir)).resolve() / self.name

    @property
    def log_path(self) -> Path:
        if self.log_dir:
            return (self.base_dir / os.path.expanduser(self.log_dir)).resolve() / self.name
        return self.state_path / "logs"

    def group(self, name: str) -> WorkerGroup:
        for g in self.workers:
            if g.name == name:
                return g
        raise KeyError(name)


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


def _size_in_bytes(number: float, unit: str) -> float:
    """What dask.utils.parse_bytes makes of '<number><unit>' (k = 1000, Ki = 1024)."""
    unit = unit.lower().rstrip("b")
    if not unit:
        return number
    power = "kmgtp".index(unit[0]) + 1
    return number * ((1024 if unit.endswith("i") else 1000) ** power)


# -- loading -------------------------------------------------------------

STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_DEPTH = 64

FIELD_HINTS = {
    "port": "use 1-65535, or 0 for any free port",
    "dashboard_port": "use 1-65535, or 0 for any free port",
    "count": "use a whole number from 1 to 1024",
    "nthreads": "use a whole number from 1 to 1024, or leave it out for dask's choice",
    "max_retries": "use a whole number from 0 to 1000",
}
TYPE_HINTS = {
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number such as 3",
    "int_parsing": "write a whole number such as 3",
    "int_from_float": "write a whole number such as 3",
    "float_type": "write a number such as 2.5",
    "float_parsing": "write a number such as 2.5",
    "string_type": "write text, quoted if it looks like a number",
    "list_type": "write a YAML list, one `- item` per line",
    "dict_type": "write a YAML mapping of `key: value` lines",
    "model_type": "write a YAML mapping of `key: value` lines",
}


def default_config_path() -> Path:
    return Path(os.environ.get("CLUSTERCTL_CONFIG") or "cluster.yaml")


def _one_line(func):
    """Every ConfigError leaves as one line: the CLI prints it as is, after `error:`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ConfigError as e:
            text = str(e)
            if "\n" in text or "\r" in text:
                raise ConfigError(" ".join(text.split())) from None
            raise

    return wrapper


@_one_line
def load_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read, parse and validate a topology file; raise ConfigError on any problem."""
    p = Path(path) if path else default_config_path()
    try:
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory; point -f at a cluster.yaml file")
        with open(p, "rb") as f:  # read with a cap: a FIFO or /dev/zero has no honest size
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(
                f"{p}: more than {MAX_FILE_BYTES} bytes is too large for a topology; "
                "is -f pointing at the right file?"
            )
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; create it (see cluster.yaml in the clusterctl project), "
            "pass -f FILE or set CLUSTERCTL_CONFIG"
        ) from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied; make it readable by this user") from None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}, line {line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
            "save the file as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    return parse_config(text, source=p)


@_one_line
def parse_config(text: str, source: Path | None = None) -> ClusterConfig:
    label = str(source) if source else "<config>"
    data, root = _parse_yaml(text, label)
    if data is None:
        raise ConfigError(
            f"{label}: the file is empty; it needs at least `workers:` (a list of groups "
            "such as `- name: default` with `count: 3`)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: the top level is a {_yaml_kind(data)}, not a mapping of keys such as "
            "`name:`, `scheduler:`, `workers:`"
        )
    try:
        cfg = ClusterConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, label, root)) from None
    _check_exposure(cfg, label, root)
    base = source.resolve().parent if source else None
    return cfg.model_copy(
        update={
            "source": source.resolve() if source else None,
            "python": _pinned_path(cfg.python, base, bare_name_ok=True),
            "bin_dir": _pinned_path(cfg.bin_dir, base, bare_name_ok=False),
        }
    )


def _pinned_path(value: str | None, base: Path | None, *, bare_name_ok: bool) -> str | None:
    """`python:`/`bin_dir:` relative to the file that names them, as `state_dir:` is.

    A bare interpreter name such as `python3` stays a name: resolve looks it up on PATH."""
    if not value:
        return value
    value = os.path.expanduser(value)
    if bare_name_ok and not any(sep in value for sep in ("/", "\\")):
        return value
    if base is None or os.path.isabs(value):
        return value
    return str(base / value)


def _check_exposure(cfg: ClusterConfig, label: str, root: yaml.Node | None) -> None:
    """Refuse plain TCP beyond loopback unless the topology says so in words."""
    if cfg.insecure:
        return
    places = [(("scheduler", "host"), cfg.scheduler.host)] + [
        (("workers", i, "host"), g.host) for i, g in enumerate(cfg.workers) if g.host
    ]
    for loc, host in places:
        if not is_loopback(host):
            line = _line_of(root, loc)
            where = f"{label}, line {line}" if line else label
            raise ConfigError(
                f"{where}: {_format_loc(loc)}: {host!r} is reachable beyond this machine, and a "
                "plain-TCP Dask endpoint runs any code sent to it; bind 127.0.0.1, or set "
                "`insecure: true` if every machine on that network is trusted"
            )


def _parse_yaml(text: str, label: str) -> tuple[Any, yaml.Node | None]:
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already: keep it inside the try
        root = loader.get_single_node()
        if root is None:
            return None, None
        count = _expanded_size(root, {}, set(), 0, label)
        if count > MAX_NODES:
            raise ConfigError(
                f"{label}: the document expands to more than {MAX_NODES} values through "
                "YAML aliases; refusing it (write the values out, or use fewer aliases)"
            )
        _check_keys(root, (), label)
        return loader.construct_document(root), root
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1 if isinstance(e.position, int) else None
        where = f"{label}, line {line}" if line else label
        char = e.character if isinstance(e.character, str) else chr(e.character)
        raise ConfigError(
            f"{where}: character {char!r} is not allowed in YAML; remove it or write it "
            "as an escape inside double quotes"
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"
        context = e.context
        if context and e.context_mark and mark and e.context_mark.line != mark.line:
            context += f" that starts at line {e.context_mark.line + 1}"  # e.g. an unclosed '['
        problem = "; ".join(p for p in (context, e.problem) if p) or "invalid YAML"
        raise ConfigError(
            f"{label}: YAML syntax error at {where}: {problem}; check the indentation and "
            "quoting there"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: invalid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(
            f"{label}: the document nests too deeply (the limit is {MAX_DEPTH} levels)"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(
    node: yaml.Node, memo: dict[int, int], active: set[int], depth: int, label: str
) -> int:
    """Count values as if every alias were copied out, memoised so it stays cheap."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError(
            f"{label}, line {node.start_mark.line + 1}: a YAML alias refers to the value that "
            "contains it (a recursive alias); write the value out instead"
        )
    if depth > MAX_DEPTH:
        raise ConfigError(
            f"{label}, line {node.start_mark.line + 1}: the document nests more than "
            f"{MAX_DEPTH} levels deep; a topology needs a handful"
        )
    active.add(key)
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(n, memo, active, depth + 1, label) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(
            _expanded_size(k, memo, active, depth + 1, label)
            + _expanded_size(v, memo, active, depth + 1, label)
            for k, v in node.value
        )
    else:
        total = 1
    active.discard(key)
    total = min(total, MAX_NODES + 1)
    memo[key] = total
    return total


def _check_keys(node: yaml.Node, loc: tuple[Any, ...], label: str, seen: set[int] | None = None) -> None:
    """Keys are text and appear once per mapping (YAML would keep the last one silently)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: its node was checked where the anchor stands
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, (*loc, i), label, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in node.value:
            line = k.start_mark.line + 1
            if isinstance(k, yaml.ScalarNode) and k.tag == MERGE_TAG:
                _check_keys(v, loc, label, seen)
                continue
            if not isinstance(k, yaml.ScalarNode) or k.tag != STR_TAG:
                shown = k.value if isinstance(k, yaml.ScalarNode) else "a list or mapping"
                raise ConfigError(
                    f"{label}, line {line}: {_format_loc(loc)}: key {shown!r} is not text; "
                    "write a name, quoted if it looks like a number"
                )
            if k.value in first:
                raise ConfigError(
                    f"{label}, line {line}: {_format_loc((*loc, k.value))}: duplicate key (first "
                    f"at line {first[k.value]}); YAML would silently keep only the last, so "
                    "keep one"
                )
            first[k.value] = line
            _check_keys(v, (*loc, k.value), label, seen)


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(e: ValidationError, label: str, root: yaml.Node | None) -> str:
    """One line for the first problem, naming path, value and the fix."""
    errors = e.errors(include_url=False)
    err = errors[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):  # a whole-model check that blames one field inside it
        loc += cause.loc
    path = _format_loc(loc)
    line = _line_of(root, loc)
    where = f"{label}, line {line}" if line else label
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model else []
        known = [k for k in known if k != "source"]
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        msg = f"{path}: unknown key; {hint}known keys here: {', '.join(known)}"
    elif kind == "missing":
        msg = f"{path}: required but missing"
    elif kind == "value_error":  # our own validators name the value and the fix
        msg = f"{path}: {err['msg'].removeprefix('Value error, ')}"
    else:
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        hint = FIELD_HINTS.get(field) or TYPE_HINTS.get(kind)
        msg = f"{path}: {err['msg']} (got {_short(value)})" + (f"; {hint}" if hint else "")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}"


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{str(part)!r}]"
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = ClusterConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest part of ``loc`` that the document spells out."""
    node = root
    found = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    found = k.start_mark.line + 1
                    node = v
                    break
            else:
                return found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            found = node.start_mark.line + 1
        else:
            return found
    return found
