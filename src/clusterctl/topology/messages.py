"""One line per problem: a pydantic ValidationError becomes file, line, field path, value and fix.

The CLI prints a ConfigError as is after `error:`, so every message here must be a single line.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .base import FieldError, _short
from .limits import MAX_GROUP_WORKERS, MAX_WORKERS_CEILING
from .models import ClusterConfig

# By field name; a (model, field) key wins for a field whose name means another thing there.
FIELD_HINTS: dict[Any, str] = {
    "port": "use 1-65535, or 0 for any free port",
    "dashboard_port": "use 1-65535, or 0 for any free port",
    ("HostConfig", "port"): "use the SSH port, 1-65535, or leave it out for ~/.ssh/config's (or 22)",
    "count": f"use a whole number from 1 to {MAX_GROUP_WORKERS}",
    "max_workers": f"use a whole number from 1 to {MAX_WORKERS_CEILING}",
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


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _describe(e: ValidationError, label: str, root: yaml.Node | None) -> str:
    """One line for the first problem, naming path, value and the fix."""
    errors = e.errors(include_url=False)
    # A misspelt key also shows up as the right key "missing": name the typo, it is the cause.
    errors.sort(key=lambda x: x["type"] != "extra_forbidden")
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
        at = next((i for i in range(len(loc) - 1, -1, -1) if isinstance(loc[i], str)), None)
        field = loc[at] if at is not None else ""
        model = _model_at(loc[:at]) if at is not None else None
        hint = FIELD_HINTS.get((model.__name__ if model else "", field)) or FIELD_HINTS.get(field) or TYPE_HINTS.get(kind)
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
    keyed = False  # the last field was a mapping of name -> model (hosts): skip the name
    for part in loc:
        if isinstance(part, int):
            continue
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        keyed = getattr(ann, "__origin__", None) is dict
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
