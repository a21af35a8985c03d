"""Settings clusterctl gives the processes it starts, unless told otherwise.

Measured on 2 cores with the default job (scripts/bench, README "Performance"):

Dask's defaults wake every idle worker about 160 times a second (a 20 ms event-loop
health tick, a 10 ms statistical profiler, a 500 ms system monitor): 3.6% of a core
per idle worker and 2.2% for the scheduler, taken from the tasks. With the values
below an idle worker uses 0.8%. What they change:

- the tick only feeds the "event loop was unresponsive for 3 s" warning and a
  digest; at 500 ms it still catches every stall that warning is about;
- the profiler keeps running at 100 ms: the dashboard's Profile page fills up ten
  times more slowly, which matters only for jobs of a few seconds;
- the system monitor (the dashboard's System page, worker memory in heartbeats)
  samples every second and so keeps two hours of history instead of one.

glibc's malloc hands allocations over 128 KiB to mmap and trims free heap tops over
128 KiB, adjusting both only after the first large free. NumPy temporaries of a few
hundred KiB, made and freed in a loop on a worker's task thread, then cost a page
fault per 4 KiB each time: 36,000-70,000 faults per worker in one run of the
default job, and 10-30% more worker CPU than the same kernel in one process. Fixed
thresholds of 1 MiB (mmap) and 2 MiB (trim) keep such buffers in the heap; larger
arrays still go to mmap and return to the system when freed. (Dask's nanny sets
MALLOC_TRIM_THRESHOLD_=64 KiB instead, favouring prompt return of memory; set it in
a group's env: to get that.)

Workers run without a nanny by default, so they would miss the nanny's
``pre-spawn-environ``; its thread caps for OpenMP, MKL and OpenBLAS are set here
instead (one BLAS thread per Dask thread, as with a nanny).

Precedence: a group's ``env:`` in cluster.yaml, then the environment clusterctl runs
in, then the user's own Dask config, then these. The three DASK_* values go into the
environment, which beats YAML in ``dask.config``; so a key the user set anywhere in
Dask's config (a YAML file in Dask's search path or any DASK_* variable) gets no
default: ``user_config`` finds those keys as ``dask.config.collect()`` would, without
importing Dask (every remote worker's agent runs this, on its own host, against that
host's files; PyYAML is imported only for a file that spells one of the keys).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

DEFAULTS: dict[str, str] = {
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "500ms",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "1s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL": "100ms",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(2 << 20),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
# Old top-level names distributed still renames to these keys (distributed/config.py deprecations).
ALIASES: dict[str, tuple[str, ...]] = {
    "distributed.admin.tick.interval": ("tick-time",),
    "distributed.worker.profile.interval": ("profile-interval",),
}
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")  # dask.config.collect_yaml
INHERIT = "DASK_INTERNAL_INHERIT_CONFIG"  # a serialized config Dask passes to its subprocesses
CLUSTERCTL_DEFAULT = "clusterctl default"
ENVIRONMENT = "environment"
GROUP_ENV = "group env"
_MISSING = object()


def setting(key: str) -> str | None:
    """The Dask config key an environment variable sets, as people write it:
    DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL -> distributed.admin.system-monitor.interval."""
    if not key.startswith("DASK_"):
        return None
    return key[5:].lower().replace("__", ".").replace("_", "-")


class Found:
    """A value the user set in Dask's config: from which file, or which environment variable."""

    __slots__ = ("value", "origin", "in_file")  # a plain class: a NamedTuple costs the agent a millisecond

    def __init__(self, value: Any, origin: str, in_file: bool) -> None:
        self.value, self.origin, self.in_file = value, origin, in_file

    def __repr__(self) -> str:
        return f"Found({self.value!r}, {self.origin!r}, in_file={self.in_file})"


def config_paths(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Where Dask looks for YAML config (dask.config._get_paths), for a process with ``environ``."""
    import site
    import sys

    home = environ.get("HOME") if os.name != "nt" and environ.get("HOME") else os.path.expanduser("~")
    paths = [
        environ.get("DASK_ROOT_CONFIG", "/etc/dask"),
        os.path.join(sys.prefix, "etc", "dask"),
        *[os.path.join(prefix, "etc", "dask") for prefix in getattr(site, "PREFIXES", [])],
        os.path.join(home, ".config", "dask"),
    ]
    if "DASK_CONFIG" in environ:
        paths.append(environ["DASK_CONFIG"])
    return list(reversed(list(dict.fromkeys(reversed(paths)))))  # duplicates: the last one counts


def config_files(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The files Dask reads, in the order it merges them (later ones win): dask.config.collect_yaml."""
    files: list[str] = []
    for path in config_paths(environ):
        if os.path.isdir(path):
            try:
                files += sorted(os.path.join(path, p) for p in os.listdir(path)
                                if os.path.splitext(p)[1].lower() in CONFIG_SUFFIXES)
            except OSError:
                pass
        elif os.path.exists(path):
            files.append(path)
    return files


def user_config(keys: Iterable[str], environ: Mapping[str, str] = os.environ,
                problems: list[str] | None = None) -> dict[str, Found]:
    """Which of ``keys`` (e.g. "distributed.admin.tick.interval") the user set in Dask's config,
    with the value a Dask process started with ``environ`` would read and where it comes from.

    Mirrors ``dask.config.collect()`` (YAML files, then DASK_* variables, which win; no
    package defaults) for these keys only. A file Dask would reject is skipped and described
    in ``problems``; Dask itself then refuses to start, with its own message."""
    wanted = {key: key.split(".") for key in keys}
    found = _from_files(wanted, environ, problems)
    found.update(_from_env(wanted, environ))
    return found


def _from_files(wanted: dict[str, list[str]], environ: Mapping[str, str],
                problems: list[str] | None) -> dict[str, Found]:
    needles = {n for key, parts in wanted.items() for name in (parts[-1], *ALIASES.get(key, ()))
               for n in (name, name.replace("-", "_"))}
    found: dict[str, Found] = {}
    for path in config_files(environ):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:  # as Dask: an unreadable file is no config
            continue
        if not any(n in text for n in needles):
            continue  # cannot set any of them: not worth importing PyYAML for
        try:
            tree = _load_yaml(text)
        except Exception as e:  # noqa: BLE001 - any parse error: Dask raises ValueError on it
            if problems is not None:
                problems.append(f"Dask config file {path} is malformed: {_one_line(e)}")
            continue
        if tree is None:
            continue
        if not isinstance(tree, Mapping):
            if problems is not None:
                problems.append(f"Dask config file {path} is malformed: its top level is a "
                                f"{type(tree).__name__}, not a mapping")
            continue
        for key, parts in wanted.items():
            value = _alias(tree, key)
            if value is _MISSING:
                value = _get(tree, parts)
            if value is not _MISSING:
                found[key] = Found(value, path, True)  # a later file wins
    return found


def _from_env(wanted: dict[str, list[str]], environ: Mapping[str, str]) -> dict[str, Found]:
    """dask.config.collect_env: DASK_FOO__BAR_BAZ=123 is {"foo": {"bar_baz": 123}}, values through
    ast.literal_eval; assigned in order, so a variable for a parent key replaces what was there."""
    d: dict[str, tuple[Any, str, bool]] = {}  # dotted key -> (value, variable, still a string)
    if INHERIT in environ:
        try:
            import base64
            import json

            inherited = json.loads(base64.urlsafe_b64decode(environ[INHERIT].encode()).decode())
        except (ValueError, TypeError):
            inherited = {}
        if isinstance(inherited, dict):
            d.update({str(k): (v, INHERIT, False) for k, v in inherited.items()})
    for name, value in environ.items():
        if name.startswith("DASK_"):
            d[name[5:].lower().replace("__", ".")] = (value, name, True)
    found: dict[str, Found] = {}
    for key, parts in wanted.items():
        state: Any = _MISSING
        origin = ""
        aliases = {a.replace("_", "-") for a in ALIASES.get(key, ())}
        for dotted, (value, var, raw) in d.items():
            path = parts if dotted.replace("_", "-") in aliases else dotted.split(".")
            if len(path) > len(parts) or not all(_same(a, b) for a, b in zip(path, parts)):
                continue  # elsewhere in the tree (or under the key itself: not a value for it)
            v = interpret(value) if raw else value
            state = v if len(path) == len(parts) else _get(v, parts[len(path):])
            origin = var
        if state is not _MISSING:
            found[key] = Found(state, origin, False)
    return found


def interpret(value: str) -> Any:
    """dask.config.interpret_value: a Python literal if it is one, YAML's null/true/false, else the string."""
    import ast

    try:
        return ast.literal_eval(value)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        pass
    return {"none": None, "null": None, "false": False, "true": True}.get(value.lower(), value)


def _one_line(e: Exception) -> str:
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)  # yaml.MarkedYAMLError
    if mark is not None and problem:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return (str(e).splitlines() or [repr(e)])[0]


def _load_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _same(a: str, b: str) -> bool:
    return a == b or a.replace("_", "-") == b.replace("_", "-")


def _get(tree: Any, parts: list[str]) -> Any:
    """dask.config.get on one config: '-' and '_' alike, the spelling given first preferred."""
    for part in parts:
        if not isinstance(tree, Mapping):
            return _MISSING
        if part in tree:
            tree = tree[part]
            continue
        alt = part.replace("_", "-") if "_" in part else part.replace("-", "_")
        if alt not in tree:
            return _MISSING
        tree = tree[alt]
    return tree


def _alias(tree: Mapping, key: str) -> Any:
    for alias in ALIASES.get(key, ()):  # dask.config.rename (exact spelling): the old name's value replaces the new one's
        if alias in tree:
            return tree[alias]
    return _MISSING


def _user_set(environ: Mapping[str, str]) -> dict[str, Found]:
    """The user's values for our DASK_* keys, by variable name."""
    keys = {k: setting(k) for k in DEFAULTS if k.startswith("DASK_")}
    found = user_config([s for s in keys.values() if s], environ)
    return {k: found[s] for k, s in keys.items() if s in found}


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Add the defaults ``environ`` lacks and the user's Dask config does not set; return what was added.

    Called by the supervisor (and a remote host's agent) before it starts anything, so
    that every child inherits them: exec'd ones and those forked from the warm server,
    whose malloc reads the MALLOC_* variables once when it starts."""
    mine = [k for k in DEFAULTS if k not in environ]
    user = _user_set(environ) if any(k.startswith("DASK_") for k in mine) else {}
    added = {k: DEFAULTS[k] for k in mine if k not in user}
    environ.update(added)
    return added


class Source:
    """One tuning value a process gets, and why: for `clusterctl validate`."""

    __slots__ = ("key", "value", "source", "origin")

    def __init__(self, key: str, value: Any, source: str, origin: str | None = None) -> None:
        self.key = key  # the environment variable
        self.value = value
        self.source = source  # CLUSTERCTL_DEFAULT, "your dask config (FILE)", ENVIRONMENT or GROUP_ENV [ (VARIABLE)]
        self.origin = origin  # the file or the variable, when not the key itself

    @property
    def setting(self) -> str | None:
        return setting(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "setting": self.setting, "value": self.value, "source": self.source,
                "origin": self.origin}

    def __repr__(self) -> str:
        return f"Source({self.key}={self.value!r}: {self.source})"


def sources(environ: Mapping[str, str] = os.environ, problems: list[str] | None = None) -> list[Source]:
    """Every tuning value a process started from ``environ`` gets, with where it comes from."""
    keys = {k: setting(k) for k in DEFAULTS if k.startswith("DASK_")}
    found = user_config([s for s in keys.values() if s], environ, problems)
    result = []
    for key, default in DEFAULTS.items():
        hit = found.get(keys.get(key) or "")
        if key in environ:
            result.append(Source(key, environ[key], ENVIRONMENT))
        elif hit is None:
            result.append(Source(key, default, CLUSTERCTL_DEFAULT))
        elif hit.in_file:
            result.append(Source(key, hit.value, f"your dask config ({hit.origin})", hit.origin))
        else:
            result.append(Source(key, hit.value, f"{ENVIRONMENT} ({hit.origin})", hit.origin))
    return result


def group_sources(env: Mapping[str, str]) -> list[Source]:
    """The tuning values a group's (or a host's) ``env:`` sets itself; they beat all the others."""
    keys = {k: setting(k) for k in DEFAULTS if k.startswith("DASK_")}
    found = _from_env({s: s.split(".") for s in keys.values() if s}, {k: v for k, v in env.items() if k != INHERIT})
    result = []
    for key in DEFAULTS:
        hit = found.get(keys.get(key) or "")
        if key in env:
            result.append(Source(key, env[key], GROUP_ENV))
        elif hit is not None:
            result.append(Source(key, hit.value, f"{GROUP_ENV} ({hit.origin})", hit.origin))
    return result
