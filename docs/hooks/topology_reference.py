"""MkDocs hook: the cluster.yaml reference, generated from the pydantic models at build time.

``<!-- topology-reference -->`` in a page becomes one section per model, walked from
``ClusterConfig`` down through every field whose type is another model: each key's type,
bounds, default and meaning. The meaning is the field's ``description`` in the model; where a
model has none, or a key needs more words than a model should carry, ``topology_notes.yml``
beside this file says it. A note for a key the models no longer have is a warning (so
``mkdocs build --strict`` fails on it); a key with no words at all is listed at INFO level.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

log = logging.getLogger("mkdocs.hooks.topology_reference")

MARKER = "<!-- topology-reference -->"
NOTES = Path(__file__).with_name("topology_notes.yml")
NAMES = {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}
BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


class Section:
    """One model: the keys that lead to it (``scheduler.restart``, ``workers[].restart``)."""

    def __init__(self, model: type[BaseModel], anchor: str):
        self.model, self.anchor, self.paths = model, anchor, []


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in get_args(tp) for m in _models_in(a)]


def sections(root: type[BaseModel]) -> list[Section]:
    """Every model reachable from ``root``, breadth first, each once, with every path to it."""
    found: dict[type[BaseModel], Section] = {root: Section(root, "top-level")}
    found[root].paths.append("")
    queue: list[tuple[type[BaseModel], str]] = [(root, "")]
    while queue:
        model, prefix = queue.pop(0)
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            for sub in _models_in(field.annotation):
                path = f"{prefix}{name}" + ("[]" if get_origin(_unwrap(field.annotation)) is list else "")
                if sub not in found:
                    taken = {s.anchor for s in found.values()}
                    anchor = name if name not in taken else sub.__name__.lower()
                    found[sub] = Section(sub, anchor)
                    queue.append((sub, path + "."))
                found[sub].paths.append(path)
    return list(found.values())


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X, Annotated[X, ...] -> X."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def type_text(tp: Any, anchors: dict[type, str]) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return type_text(args[0], anchors)
    if origin in (Union, types.UnionType):
        parts = [type_text(a, anchors) for a in args if a is not type(None)]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is Literal:
        return " or ".join(f"`{_yaml(v)}`" for v in args)
    if origin is list:
        return f"list of {type_text(args[0], anchors)}"
    if origin is dict:
        return f"map of {type_text(args[0], anchors)} to {type_text(args[1], anchors)}"
    if tp in anchors:
        return f"[mapping](#{anchors[tp]})"
    return NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def bounds(field: Any) -> str:
    """`> 0, ≤ 300` from the field's constraints (also those inside Optional[Annotated[...]])."""
    found = list(field.metadata)
    for arg in get_args(field.annotation):
        if get_origin(arg) is Annotated:
            found += list(get_args(arg)[1:])
    out = []
    for item in found:
        for attr, sign in BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {_number(value)}")
    return ", ".join(out)


def _number(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _yaml(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _number(v)
    if isinstance(v, (list, dict)):
        return yaml.safe_dump(v, default_flow_style=True).strip()
    return str(v)


def default_text(field: Any, anchors: dict[type, str]) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return f"[its defaults](#{anchors[type(value)]})"
    if isinstance(value, list) and any(isinstance(x, BaseModel) for x in value):
        return "see below"
    return f"`{_yaml(value)}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def render(root: type[BaseModel], notes: dict[str, Any]) -> tuple[str, set[str], list[str]]:
    """The Markdown; the note keys it used; the keys that have no words at all."""
    found = sections(root)
    anchors = {s.model: s.anchor for s in found}
    field_notes, defaults, intros = notes.get("fields", {}), notes.get("defaults", {}), notes.get("models", {})
    used: set[str] = set()
    bare: list[str] = []
    out: list[str] = []
    for s in found:
        name = s.model.__name__
        title = ", ".join(f"`{p}`" for p in s.paths) if s.paths != [""] else "Top level"
        out.append(f"### {title} {{#{s.anchor}}}\n")
        if name in intros:
            used.add(name)
        intro = intros.get(name) or (s.model.__doc__ or "").strip().split("\n\n")[0]
        if intro:
            out.append(" ".join(intro.split()) + "\n")
        out.append("| key | type | default | what it means |\n|---|---|---|---|")
        for key, field in s.model.model_fields.items():
            if field.exclude:
                continue
            ident = f"{name}.{key}"
            words = _sentence(field.description or "")
            if ident in field_notes:
                used.add(ident)
                note = _sentence(field_notes[ident])
                # "default: ..." reads best after what the key is for
                words = f"{note} {words}" if words.lower().startswith("default") else f"{words} {note}"
                words = words.strip()
            if not words:
                bare.append(ident)
            limits = bounds(field)
            kind = type_text(field.annotation, anchors) + (f", {limits}" if limits else "")
            if ident in defaults:
                used.add(ident)
                shown = defaults[ident]
            else:
                shown = default_text(field, anchors)
            out.append(f"| `{key}` | {_cell(kind)} | {_cell(shown)} | {_cell(words)} |")
        out.append("")
    return "\n".join(out), used, bare


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from clusterctl.topology import ClusterConfig

    notes = yaml.safe_load(NOTES.read_text()) or {}
    text, used, bare = render(ClusterConfig, notes)
    known = {*notes.get("fields", {}), *notes.get("defaults", {}), *notes.get("models", {})}
    for stale in sorted(known - used):
        log.warning("%s: %s is not a key of the topology models any more; remove or rename its note",
                    NOTES.name, stale)
    if bare:
        log.info("topology keys with no description in the model nor in %s: %s", NOTES.name, ", ".join(bare))
    return markdown.replace(MARKER, text)
