"""Fitting in: `clusterctl schema`, cluster.example.yaml, and an Example in every --help."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from clusterctl.cli import app
from clusterctl.topology import ClusterConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cluster.example.yaml"
runner = CliRunner()


def yaml_fields(model: type[BaseModel]) -> dict[str, list[type[BaseModel]]]:
    """Every field a user may write, with the models nested in it (WorkerGroup in list[WorkerGroup])."""

    def models_in(tp) -> list[type[BaseModel]]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for arg in typing.get_args(tp) for m in models_in(arg)]

    return {name: models_in(f.annotation) for name, f in model.model_fields.items() if not f.exclude}


def all_models(model: type[BaseModel] = ClusterConfig, seen: set | None = None) -> set[type[BaseModel]]:
    seen = set() if seen is None else seen
    seen.add(model)
    for nested in yaml_fields(model).values():
        for m in nested:
            if m not in seen:
                all_models(m, seen)
    return seen


# -- schema ----------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_schema_is_json_naming_the_top_level_keys(schema):
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(yaml_fields(ClusterConfig))
    assert {"name", "scheduler", "workers", "timeouts", "state_dir"} <= set(schema["properties"])
    assert "source" not in schema["properties"] and "source" not in json.dumps(schema["properties"])
    assert schema["additionalProperties"] is False, "editors should flag a misspelt key"
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_schema_bounds_the_total_and_takes_every_placement(schema):
    from clusterctl.topology.limits import DEFAULT_MAX_WORKERS, MAX_WORKERS_CEILING

    total = schema["properties"]["max_workers"]
    assert (total["default"], total["minimum"], total["maximum"]) == (DEFAULT_MAX_WORKERS, 1, MAX_WORKERS_CEILING)
    at = schema["$defs"]["WorkerGroup"]["properties"]["at"]
    kinds = {branch.get("type") for branch in at["anyOf"]}
    assert {"string", "array", "object", "null"} <= kinds, at  # a name, a list of names, name -> count


def test_schema_describes_every_nested_model(schema):
    defs = schema["$defs"]
    for model in all_models() - {ClusterConfig}:
        assert set(defs[model.__name__]["properties"]) == set(yaml_fields(model)), model.__name__
        assert defs[model.__name__]["additionalProperties"] is False


def test_example_uses_only_keys_the_schema_knows(schema):
    def walk(value, node):
        while "$ref" in node or "anyOf" in node:  # follow refs and Optional[...] to the object
            if "$ref" in node:
                node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
            else:
                node = next((n for n in node["anyOf"] if n.get("type") != "null"), node["anyOf"][0])
        if isinstance(value, dict) and "properties" in node:
            for key, v in value.items():
                assert key in node["properties"], f"{key!r} is not in the schema"
                walk(v, node["properties"][key])
        elif isinstance(value, list) and "items" in node:
            for v in value:
                walk(v, node["items"])

    walk(yaml.safe_load(EXAMPLE.read_text()), schema)


# -- cluster.example.yaml ----------------------------------------------------


def test_example_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.workers and cfg.scheduler.host == "127.0.0.1"


def test_example_writes_out_every_field_of_every_model():
    data = yaml.safe_load(EXAMPLE.read_text())
    seen: set[type[BaseModel]] = set()

    def check(model: type[BaseModel], value, where: str) -> None:
        seen.add(model)
        assert isinstance(value, dict), where
        fields = yaml_fields(model)
        missing = sorted(set(fields) - set(value))
        assert not missing, f"{EXAMPLE.name}: {where or '(top level)'} lacks {missing} ({model.__name__})"
        for name, nested in fields.items():
            for m in nested:
                items = value[name] if isinstance(value[name], list) else [value[name]]
                if value[name] is None:  # a host's `owner: null` (the top level's): written out at the top
                    continue
                for i, item in enumerate(items):
                    check(m, item, f"{where}.{name}" + (f"[{i}]" if isinstance(value[name], list) else ""))

    check(ClusterConfig, data, "")
    assert seen == all_models()


def test_every_key_in_the_example_has_a_comment():
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(- )?([A-Za-z_]+):", line)
        if not m:
            continue
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#") or "#" in line.split(":", 1)[1], f"line {i + 1}: {line.strip()!r} has no comment"


def test_every_model_field_name_appears_in_the_example():
    text = EXAMPLE.read_text()
    for model in all_models():
        for name in yaml_fields(model):
            assert re.search(rf"^\s*(- )?{name}:", text, re.M), f"{model.__name__}.{name}"


# -- --help ------------------------------------------------------------------


def command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group below ``group``, as the words that invoke it.

    (Duck-typed: typer may bring its own copy of click, whose groups are no click.Group.)"""
    paths = []
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        paths.append((*prefix, name))
        if hasattr(cmd, "list_commands"):
            paths += command_paths(cmd, (*prefix, name))
    return paths


PATHS = command_paths(typer.main.get_command(app))


def test_the_walk_finds_the_commands():
    assert {("up",), ("down",), ("status",), ("run",), ("run", "montecarlo"), ("dashboard",), ("env",), ("schema",)} <= set(PATHS)


@pytest.mark.parametrize("path", [(), *PATHS], ids=lambda p: " ".join(p) or "clusterctl")
def test_every_help_has_an_example(path):
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"`clusterctl {' '.join(path)} --help` shows no Example: line"
