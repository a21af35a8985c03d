"""MkDocs hook: the option tables of docs/commands.md, read from the Typer app at build time.

A page writes ``<!-- cli: up -->`` (or ``<!-- cli: worker add -->``) where a command's usage and
options belong, and ``<!-- cli-index -->`` for a table of every command. Commands that no marker
names are appended to the page that has ``<!-- cli-rest -->``, so a new command always shows up.
"""

from __future__ import annotations

import logging
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

log = logging.getLogger("mkdocs.hooks.cli_reference")

MARKER = re.compile(r"<!--\s*cli:\s*([a-z][a-z0-9 -]*?)\s*-->")
INDEX = "<!-- cli-index -->"
REST = "<!-- cli-rest -->"
SKIPPED = {"help", "install_completion", "show_completion"}
PLACEHOLDER = {int: "INTEGER", float: "NUMBER", str: "TEXT", Path: "PATH", bool: ""}


def commands() -> dict[str, Any]:
    """Every runnable command by its path ("up", "worker add"), in the app's order."""
    import typer.main

    from clusterctl.cli import app

    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            if getattr(cmd, "hidden", False):
                continue
            path = f"{prefix} {name}".strip()
            if getattr(cmd, "commands", None):
                walk(cmd, path)
            else:
                found[path] = cmd

    walk(typer.main.get_command(app), "")
    return found


def _plain(text: str | None) -> str:
    """Help text as Markdown: rich's escaped brackets back, one line."""
    return " ".join((text or "").replace("\\[", "[").split())


def _cell(text: str | None) -> str:
    return _plain(text).replace("|", "\\|")


def summary(cmd: Any) -> str:
    """The first paragraph of a command's help."""
    return _plain((cmd.help or "").split("\n\n")[0])


def _annotation(param: Any) -> Any:
    descriptor = getattr(param, "type_descriptor", None)
    tp = getattr(descriptor, "annotation", None)
    while get_origin(tp) in (Union, types.UnionType):
        tp = next((a for a in get_args(tp) if a is not type(None)), str)
    if get_origin(tp) is list:
        tp = get_args(tp)[0]
    return tp


def _placeholder(param: Any) -> str:
    tp = _annotation(param)
    if tp in PLACEHOLDER:
        return PLACEHOLDER[tp]
    click_type = getattr(param, "type", None)  # plain click, should typer's internals change
    return (getattr(click_type, "name", "") or "TEXT").upper()


def _default(param: Any) -> str:
    if getattr(param, "is_flag", False) and param.secondary_opts:  # --export/--plain: the one in force
        return f"`{param.opts[0] if param.default else param.secondary_opts[0]}`"
    if getattr(param, "is_flag", False) or param.required or not getattr(param, "show_default", True):
        return ""
    value = param.default
    if value is None or value == () or value == []:
        return ""
    return f"`{value}`"


def usage(path: str, cmd: Any) -> str:
    words = ["clusterctl", path, "[OPTIONS]"]
    for p in cmd.params:
        if p.param_type_name == "argument":
            name = p.name.upper()
            name += "..." if p.nargs == -1 else ""
            words.append(name if p.required else f"[{name}]")
    return " ".join(words)


def options_table(cmd: Any) -> str:
    rows = ["| argument or option | value | default | what it does |", "|---|---|---|---|"]
    for p in cmd.params:
        if p.name in SKIPPED or getattr(p, "hidden", False):
            continue
        if p.param_type_name == "argument":
            names = f"`{p.name.upper()}`" + (" ..." if p.nargs == -1 else "")
            value = _placeholder(p)
        else:
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            value = "" if getattr(p, "is_flag", False) else _placeholder(p)
        required = " (required)" if p.required else ""
        rows.append(f"| {names} | {value} | {_default(p)} | {_cell(getattr(p, 'help', ''))}{required} |")
    return "\n".join(rows)


def reference(path: str, cmd: Any) -> str:
    return f"{summary(cmd)}\n\n```text\n{usage(path, cmd)}\n```\n\n{options_table(cmd)}\n"


def index(found: dict[str, Any], order: list[str]) -> str:
    """One row per command: those the page has sections for in the page's order, then the rest."""
    rows = ["| command | what it does |", "|---|---|"]
    for path in [*[p for p in order if p in found], *[p for p in found if p not in order]]:
        anchor = path.replace(" ", "-")
        rows.append(f"| [`clusterctl {path}`](#{anchor}) | {_cell(summary(found[path]))} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!-- cli" not in markdown:
        return markdown
    found = commands()
    order = MARKER.findall(markdown)
    named = set(order)
    for path in sorted(named - set(found)):
        log.warning("%s names `clusterctl %s`, which the Typer app does not have", page.file.src_path, path)

    def replace(m: re.Match[str]) -> str:
        cmd = found.get(m.group(1))
        return reference(m.group(1), cmd) if cmd is not None else m.group(0)

    markdown = MARKER.sub(replace, markdown)
    markdown = markdown.replace(INDEX, index(found, order))
    rest = [p for p in found if p not in named]
    if REST in markdown:
        extra = "".join(f"\n## `clusterctl {p}` {{#{p.replace(' ', '-')}}}\n\n{reference(p, found[p])}" for p in rest)
        markdown = markdown.replace(REST, extra)
    elif rest:
        log.info("commands without a section: %s", ", ".join(rest))
    return markdown
