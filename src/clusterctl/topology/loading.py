"""Read ``cluster.yaml`` safely and validate it once into a ClusterConfig.

Safely: a size cap, no "billion laughs" alias expansion, no nesting past a limit, no duplicate
or non-text keys, and no plain TCP beyond loopback unless the file says so. Every failure is a
:class:`ConfigError` naming the file, the line when known, the field path, the bad value and what
would be accepted::

    >>> load_config("cluster.yaml")            # doctest: +SKIP
    ClusterConfig(name='walkthrough', ...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .hosts import is_loopback
from .limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from .base import _short
from .messages import _describe, _format_loc, _line_of, _one_line, _yaml_kind
from .models import ClusterConfig

YAML_TAG = "tag:yaml.org,2002:"
STR_TAG = YAML_TAG + "str"
MERGE_TAG = YAML_TAG + "merge"
SAFE_TAGS = frozenset({MERGE_TAG, *(t for t in yaml.SafeLoader.yaml_constructors if t)})  # str, int, map, seq, ...


def default_config_path() -> Path:
    return Path(os.environ.get("CLUSTERCTL_CONFIG") or "cluster.yaml")


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
    if cfg.insecure or cfg.tls_enabled:
        return
    for loc, host in cfg.binds():
        if not is_loopback(host):
            line = _line_of(root, loc)
            where = f"{label}, line {line}" if line else label
            raise ConfigError(
                f"{where}: {_format_loc(loc)}: {host!r} is reachable beyond this machine, and a "
                "plain-TCP Dask endpoint runs any code sent to it; bind 127.0.0.1, remove "
                "`tls: {enabled: false}` (TLS is on by default there), or set `insecure: true` "
                "if every machine on that network is trusted"
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
    except yaml.constructor.ConstructorError as e:  # a tag _check_keys let through: still no syntax error
        mark = e.problem_mark or e.context_mark
        where = f"{label}, line {mark.line + 1}" if mark else label
        raise ConfigError(
            f"{where}: {' '.join(str(e.problem or e).split())}: a YAML tag that does not fit its value; "
            "remove the tag"
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
    _check_tag(node, loc, label)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, (*loc, i), label, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in node.value:
            line = k.start_mark.line + 1
            _check_tag(k, loc, label)
            if isinstance(k, yaml.ScalarNode) and k.tag == MERGE_TAG:
                _check_keys(v, loc, label, seen)
                continue
            if not isinstance(k, yaml.ScalarNode) or k.tag != STR_TAG:
                shown = k.value if isinstance(k, yaml.ScalarNode) else "a list or mapping"
                hint = "write a name, quoted if it looks like a number"
                if str(shown).lower() in ("on", "off", "yes", "no", "y", "n"):
                    hint = f"YAML reads {shown} as a boolean; quote it" + (
                        ", or place workers with `at:`" if str(shown).lower() == "on" else ""
                    )
                raise ConfigError(
                    f"{label}, line {line}: {_format_loc(loc)}: key {shown!r} is not text; {hint}"
                )
            if k.value in first:
                raise ConfigError(
                    f"{label}, line {line}: {_format_loc((*loc, k.value))}: duplicate key (first "
                    f"at line {first[k.value]}); YAML would silently keep only the last, so "
                    "keep one"
                )
            first[k.value] = line
            _check_keys(v, (*loc, k.value), label, seen)


TAG_HINT = "clusterctl loads YAML safely and refuses tags that build objects; write a plain value instead"


def _check_tag(node: yaml.Node, loc: tuple[Any, ...], label: str) -> None:
    """`!!python/object:...`, `!custom`: refused by name and line, before anything is built;
    `!!int abc`: a standard tag its value does not fit (PyYAML would raise a bare ValueError)."""
    tag = "!!" + node.tag[len(YAML_TAG):] if node.tag.startswith(YAML_TAG) else node.tag
    where = f"{label}, line {node.start_mark.line + 1}: {_format_loc(loc)}"
    if node.tag not in SAFE_TAGS:
        raise ConfigError(f"{where}: the tag {_short(tag)} is not allowed; {TAG_HINT}")
    if isinstance(node, yaml.ScalarNode) and node.tag not in (STR_TAG, MERGE_TAG):
        try:
            _SCALARS.yaml_constructors[node.tag](_SCALARS, node)
        except Exception:  # noqa: BLE001 - ValueError, KeyError, AttributeError...: all mean "does not fit"
            raise ConfigError(f"{where}: {_short(node.value)} is not a {tag} value; remove the tag or fix the value") from None


_SCALARS = yaml.SafeLoader("")  # builds single scalars for _check_tag (no document state involved)
