"""cluster.yaml in, typed config or one clear ConfigError out (no processes)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from clusterctl.topology import (
    MAX_FILE_BYTES,
    ClusterConfig,
    RestartPolicy,
    SchedulerConfig,
    Timeouts,
    WorkerGroup,
    default_config_path,
    is_loopback,
    load_config,
    parse_config,
)
from clusterctl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def config_error(text: str, source: Path | None = None) -> str:
    """Parse text that must fail; return the message after checking its shape."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source)
    return checked(info.value)


def load_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return checked(info.value)


def checked(err: ConfigError) -> str:
    msg = str(err)
    assert err.exit_code == 2
    assert "\n" not in msg and "\r" not in msg, msg
    assert "Traceback" not in msg
    assert err.__suppress_context__ or err.__cause__ is None  # no chained traceback shown
    return msg


# -- valid input -------------------------------------------------------------------


def test_defaults_are_the_walkthrough_cluster():
    cfg = parse_config("name: x\n")
    assert cfg.scheduler == SchedulerConfig()
    assert (cfg.scheduler.host, cfg.scheduler.port, cfg.scheduler.dashboard_port) == ("127.0.0.1", 8786, 8787)
    assert [(g.name, g.count) for g in cfg.workers] == [("default", 3)]
    assert cfg.timeouts == Timeouts() and cfg.scheduler.restart == RestartPolicy()
    assert not cfg.insecure


def test_full_topology_parses():
    cfg = parse_config(
        """
name: lab
scheduler: {host: localhost, port: 9786, dashboard_port: 9787, dashboard: false, idle_timeout: 600}
workers:
  - name: cpu
    count: 2
    nthreads: 4
    memory_limit: 4GiB
    resources: {GPU: 2, MEM: 1e9}
    nanny: false
    restart: {policy: on-failure, max_retries: 2}
  - name: small
    memory_limit: 0.25
timeouts: {startup: 30, shutdown: 5}
"""
    )
    cpu, small = cfg.workers
    assert isinstance(cpu, WorkerGroup)
    assert (cpu.count, cpu.nthreads, cpu.memory_limit, cpu.nanny) == (2, 4, "4GiB", False)
    assert cpu.resources == {"GPU": 2.0, "MEM": 1e9}  # YAML 1.1 reads 1e9 as text; still a number
    assert cpu.restart.policy == "on-failure" and cpu.restart.max_retries == 2
    assert small.memory_limit == 0.25 and small.count == 1
    assert cfg.scheduler.dashboard is False and cfg.scheduler.idle_timeout == 600
    assert cfg.timeouts.startup == 30


def test_env_values_become_strings():
    cfg = parse_config(
        "workers:\n  - env: {OMP_NUM_THREADS: 1, DEBUG: true, QUIET: false, RATIO: 0.5, EMPTY: null, S: text}\n"
    )
    assert cfg.workers[0].env == {
        "OMP_NUM_THREADS": "1",
        "DEBUG": "true",
        "QUIET": "false",
        "RATIO": "0.5",
        "EMPTY": "",
        "S": "text",
    }
    assert all(isinstance(v, str) for v in cfg.workers[0].env.values())


@pytest.mark.parametrize("limit, expected", [("auto", "auto"), ("512MB", "512MB"), ("4 GiB", "4GiB"),
                                             (0, 0), (0.5, 0.5), ("0.5", 0.5), (4.0e9, 4000000000),
                                             (2_000_000_000, 2_000_000_000)])
def test_memory_limit_accepted_forms(limit, expected):
    cfg = parse_config(f"workers:\n  - memory_limit: {limit!r}\n" if isinstance(limit, str)
                       else f"workers:\n  - memory_limit: {limit}\n")
    assert cfg.workers[0].memory_limit == expected


def test_memory_limit_strings_mean_what_dask_reads():
    from dask.utils import parse_bytes

    from clusterctl.topology.workers import _size_in_bytes, BYTES_RE

    for text in ["4GiB", "4G", "4Gi", "4gb", "512MB", "512mb", "1.5GB", "4k", "4KiB", "2T", "4mi", "8b"]:
        m = BYTES_RE.match(text)
        assert m, text
        assert int(_size_in_bytes(float(m.group(1)), m.group(3))) == parse_bytes(text), text


def test_insecure_allows_a_wider_bind():
    cfg = parse_config("insecure: true\nscheduler:\n  host: 0.0.0.0\nworkers:\n  - host: 192.168.1.5\n")
    assert cfg.scheduler.host == "0.0.0.0" and cfg.workers[0].host == "192.168.1.5"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]",
                                  "::ffff:127.0.0.1"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.5", "myhost", "example.com"])
def test_non_loopback_hosts(host):
    assert not is_loopback(host)


def test_ipv6_host_loses_its_brackets():
    assert parse_config("scheduler:\n  host: '[::1]'\n").scheduler.host == "::1"


def test_yaml_merge_keys_work():
    cfg = parse_config("workers:\n  - <<: {count: 2, nthreads: 1}\n    name: x\n")
    assert (cfg.workers[0].name, cfg.workers[0].count, cfg.workers[0].nthreads) == ("x", 2, 1)


def test_utf8_bom_is_fine(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_bytes("\ufeffname: bom\n".encode())
    assert load_config(p).name == "bom"


def test_load_config_records_source_and_paths(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_text("name: lab\nstate_dir: st\npython: env/bin/python\nbin_dir: env/bin\n")
    cfg = load_config(p)
    assert cfg.source == p.resolve()
    assert cfg.state_path == tmp_path.resolve() / "st" / "lab"
    assert cfg.log_path == cfg.state_path / "logs"
    # Pinned paths are relative to the file, like state_dir, not to the caller's cwd.
    assert cfg.python == str(tmp_path.resolve() / "env/bin/python")
    assert cfg.bin_dir == str(tmp_path.resolve() / "env/bin")


def test_bare_python_name_stays_a_name(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_text("python: python3\n")
    assert load_config(p).python == "python3"


def test_default_config_path(monkeypatch):
    monkeypatch.delenv("CLUSTERCTL_CONFIG", raising=False)
    assert default_config_path() == Path("cluster.yaml")
    monkeypatch.setenv("CLUSTERCTL_CONFIG", "/etc/lab.yaml")
    assert default_config_path() == Path("/etc/lab.yaml")


def test_repo_cluster_yaml_is_the_walkthrough():
    cfg = load_config(REPO / "cluster.yaml")
    assert cfg.name == "walkthrough"
    assert (cfg.scheduler.host, cfg.scheduler.port, cfg.scheduler.dashboard_port) == ("127.0.0.1", 8786, 8787)
    assert [(g.name, g.count) for g in cfg.workers] == [("default", 3)]
    text = (REPO / "cluster.yaml").read_text()
    assert sum(line.lstrip().startswith("#") for line in text.splitlines()) >= 5


# -- YAML-level errors ---------------------------------------------------------------


def test_yaml_syntax_error_names_the_line():
    msg = config_error("name: x\nscheduler:\n  port: 8786\n  host: [127.0.0.1\nworkers: []\n")
    # Found at line 5, caused by the '[' left open at line 4: both are named.
    assert "YAML syntax error at line 5" in msg and "starts at line 4" in msg, msg


def test_yaml_bad_indentation_names_the_line():
    msg = config_error("name: x\nscheduler:\n  port: 8786\n dashboard_port: 1\n")
    assert "YAML syntax error" in msg and "line 4" in msg, msg


def test_tab_indentation_is_a_syntax_error():
    msg = config_error("name: x\n\tscheduler: 1\n")
    assert "line 2" in msg and "\\t" in msg, msg


def test_empty_file():
    assert "empty" in config_error("")
    assert "empty" in config_error("# only a comment\n")


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("hello\n", "string"), ("42\n", "number"),
                                        ("true\n", "boolean")])
def test_top_level_must_be_a_mapping(text, kind):
    msg = config_error(text)
    assert f"top level is a {kind}" in msg and "mapping" in msg, msg


def test_two_documents_are_refused():
    assert "line 2" in config_error("name: a\n---\nname: b\n")


def test_python_tags_are_refused():
    msg = config_error("name: !!python/object/apply:os.system ['true']\n")
    assert "line 1" in msg and "python/object" in msg, msg


def test_control_characters_are_refused():
    msg = config_error("name: x\nscheduler:\n  host: a\x00b\n")
    assert "line 3" in msg and "\\x00" in msg, msg


def test_billion_laughs_is_refused_quickly():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lines) + "\n"  # 9**9 = 387 million strings once expanded
    start = time.perf_counter()
    msg = config_error(text)
    assert time.perf_counter() - start < 1.0
    assert "aliases" in msg and "refusing" in msg, msg


def test_recursive_alias_is_refused():
    msg = config_error("workers: &w\n  - name: a\n    more: *w\n")
    assert "recursive alias" in msg and "line 1" in msg, msg


def test_deep_nesting_is_refused():
    msg = config_error("name: " + "[" * 100 + "]" * 100 + "\n")
    assert "deep" in msg, msg


def test_duplicate_keys_are_refused():
    msg = config_error("name: a\nscheduler:\n  port: 1000\n  port: 2000\n")
    assert "scheduler.port" in msg and "duplicate" in msg and "line 4" in msg and "line 3" in msg, msg


def test_non_text_keys_are_refused():
    msg = config_error("workers:\n  - name: a\n    1: x\n")
    assert "line 3" in msg and "workers[0]" in msg and "'1'" in msg and "not text" in msg, msg
    assert "not text" in config_error("scheduler: {null: 1}\n")


# -- field errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, guess",
    [
        ("workers:\n  - name: a\n    cuont: 3\n", "workers[0].cuont", "'count'"),
        ("nmae: x\n", "nmae", "'name'"),
        ("scheduler:\n  dashbaord_port: 1\n", "scheduler.dashbaord_port", "'dashboard_port'"),
        ("scheduler:\n  restart:\n    polcy: never\n", "scheduler.restart.polcy", "'policy'"),
    ],
)
def test_unknown_keys_suggest_the_right_one(text, path, guess):
    msg = config_error(text)
    assert f"{path}: unknown key" in msg and f"did you mean {guess}?" in msg, msg
    assert "known keys here:" in msg


def test_unknown_key_without_close_match_lists_known_keys():
    msg = config_error("colour: blue\n")
    assert "did you mean" not in msg and "known keys here: bin_dir, hosts, hours, insecure" in msg, msg
    assert "source" not in msg  # internal field, never written in YAML


@pytest.mark.parametrize(
    "text, path, bad, accepted",
    [
        ("scheduler:\n  port: abc\n", "scheduler.port", "'abc'", "valid integer"),
        ("scheduler:\n  port: '8786'\n", "scheduler.port", "'8786'", "valid integer"),
        ("workers:\n  - count: true\n", "workers[0].count", "True", "whole number"),
        ("workers:\n  - count: 2.5\n", "workers[0].count", "2.5", "whole number"),
        ("workers:\n  - count: '3'\n", "workers[0].count", "'3'", "whole number"),
        ("scheduler:\n  dashboard: 1\n", "scheduler.dashboard", "1", "true or false"),
        ("workers: {name: a}\n", "workers", "{'name': 'a'}", "valid list"),
        ("workers:\n  - env: [1, 2]\n", "workers[0].env", "[1, 2]", "valid dictionary"),
        ("scheduler:\n", "scheduler", "None", "valid dictionary"),
        ("timeouts:\n  startup: fast\n", "timeouts.startup", "'fast'", "valid number"),
        ("timeouts:\n  startup: .nan\n", "timeouts.startup", "nan", "finite number"),
        ("timeouts:\n  shutdown: yes\n", "timeouts.shutdown", "True", "number"),
        ("workers:\n  - resources: {GPU: true}\n", "workers[0].resources.GPU", "True", "number"),
        ("workers:\n  - restart: {policy: sometimes}\n", "workers[0].restart.policy", "'sometimes'",
         "'always', 'on-failure' or 'never'"),
        ("name: 5\n", "name", "5", "valid string"),
    ],
)
def test_wrong_types(text, path, bad, accepted):
    msg = config_error(text)
    assert f"{path}: " in msg and bad in msg and accepted in msg, msg


@pytest.mark.parametrize("count", [0, -1, -100])
def test_counts_must_be_positive(count):
    msg = config_error(f"workers:\n  - name: a\n    count: {count}\n")
    assert "line 3" in msg and "workers[0].count" in msg and f"(got {count})" in msg, msg
    assert "1 to 1024" in msg


def test_nthreads_must_be_positive():
    msg = config_error("workers:\n  - nthreads: 0\n")
    assert "workers[0].nthreads" in msg and "(got 0)" in msg, msg


@pytest.mark.parametrize("field, port", [("port", 70000), ("port", -1), ("dashboard_port", 65536),
                                         ("port", 99999999999999999999)])
def test_ports_in_range(field, port):
    msg = config_error(f"scheduler:\n  {field}: {port}\n")
    assert f"scheduler.{field}" in msg and f"(got {port})" in msg and "1-65535" in msg, msg
    assert "line 2" in msg


def test_scheduler_and_dashboard_ports_differ():
    msg = config_error("scheduler:\n  port: 9000\n  dashboard_port: 9000\n")
    assert "line 3" in msg and "scheduler.dashboard_port" in msg and "9000" in msg, msg
    assert "another port" in msg


def test_both_ports_zero_is_allowed():
    cfg = parse_config("scheduler:\n  port: 0\n  dashboard_port: 0\n")
    assert cfg.scheduler.port == cfg.scheduler.dashboard_port == 0


def test_duplicate_group_names():
    msg = config_error("workers:\n  - name: a\n  - name: b\n  - name: a\n    count: 2\n")
    assert "line 4" in msg and "workers[2].name" in msg and "'a'" in msg and "workers[0]" in msg, msg


@pytest.mark.parametrize("name", ["bad name", "-lead", "", "x" * 64, "scheduler"])
def test_bad_group_names(name):
    msg = config_error(f"workers:\n  - name: {name!r}\n")
    assert "workers[0].name" in msg and repr(name) in msg, msg


def test_nested_error_reports_its_own_line():
    text = "name: x\n\nworkers:\n  - name: a\n  - name: b\n\n    restart:\n      max_retries: -3\n"
    msg = config_error(text)
    assert msg.startswith("<config>, line 8: workers[1].restart.max_retries:"), msg
    assert "(got -3)" in msg


def test_message_names_the_file(tmp_path):
    p = tmp_path / "lab.yaml"
    p.write_text("workers:\n  - count: 0\n")
    msg = load_error(p)
    assert msg.startswith(f"{p}, line 2: workers[0].count"), msg


def test_more_problems_are_counted():
    msg = config_error("workers:\n  - count: 0\n    nthreads: 0\n")
    assert "(and 1 more problem)" in msg, msg


@pytest.mark.parametrize(
    "limit, words",
    [
        ("lots", "'lots' is not a size"),
        ("4e9", "'4e9' is not a size"),
        ("true", "True is not a memory limit"),
        ("-5", "-5 is negative"),
        ("2.5", "2.5 is neither a fraction"),
        ("'100'", "too small"),
        ("100kb", "too small"),
        ("[1]", "is not a memory limit"),
    ],
)
def test_bad_memory_limit(limit, words):
    msg = config_error(f"workers:\n  - memory_limit: {limit}\n")
    assert "line 2" in msg and "workers[0].memory_limit" in msg and words in msg, msg
    assert "'4GiB'" in msg or "MB" in msg  # says what would work


@pytest.mark.parametrize("resources, words", [("{1GPU: 1}", "'1GPU'"), ("{GPU-X: 1}", "'GPU-X'"),
                                              ("{GPU: -1}", "negative"), ("{GPU: lots}", "'lots'")])
def test_bad_resources(resources, words):
    msg = config_error(f"workers:\n  - resources: {resources}\n")
    assert "workers[0].resources" in msg and words in msg, msg


@pytest.mark.parametrize("env, words", [("{'': x}", "name ''"), ("{'A=B': x}", "'A=B'"),
                                        ("{A: [1, 2]}", "not a single value")])
def test_bad_env(env, words):
    msg = config_error(f"workers:\n  - env: {env}\n")
    assert "workers[0].env" in msg and words in msg, msg


@pytest.mark.parametrize("host", ["a b", "", "host_with_underscore"])
def test_bad_host(host):
    msg = config_error(f"scheduler:\n  host: {host!r}\n")
    assert "scheduler.host" in msg, msg


@pytest.mark.parametrize(
    "text, path, line",
    [
        ("scheduler:\n  host: 0.0.0.0\n", "scheduler.host", 2),
        ("scheduler:\n  host: '::'\n", "scheduler.host", 2),
        ("scheduler:\n  host: 192.168.1.5\n", "scheduler.host", 2),
        ("scheduler:\n  host: myworkstation\n", "scheduler.host", 2),
        ("workers:\n  - name: a\n  - name: b\n    host: 10.0.0.7\n", "workers[1].host", 4),
    ],
)
def test_non_loopback_without_tls_needs_insecure(text, path, line):
    off = "tls:\n  enabled: false\n"
    msg = config_error(text + off)
    assert msg.startswith(f"<config>, line {line}: {path}:"), msg
    assert "insecure: true" in msg and "127.0.0.1" in msg
    cfg = parse_config("insecure: true\n" + text + off)  # accepted once said in words
    assert not cfg.tls_enabled and cfg.warnings() and "plain TCP" in cfg.warnings()[0]


@pytest.mark.parametrize("text", ["scheduler:\n  host: 0.0.0.0\n", "workers:\n  - host: 10.0.0.7\n"])
def test_non_loopback_turns_tls_on_by_default(text):
    cfg = parse_config(text)
    assert cfg.tls_enabled and cfg.protocol == "tls" and cfg.warnings() == []
    assert not parse_config("insecure: true\n" + text).tls_enabled  # opted out, in words


def test_insecure_must_be_a_boolean():
    msg = config_error("insecure: 'yes please'\nscheduler:\n  host: 0.0.0.0\n")
    assert "insecure" in msg and "valid boolean" in msg, msg


# -- file errors ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    msg = load_error(p)
    assert str(p) in msg and "no such file" in msg and "-f" in msg, msg


def test_default_path_from_environment(tmp_path, monkeypatch):
    p = tmp_path / "other.yaml"
    monkeypatch.setenv("CLUSTERCTL_CONFIG", str(p))
    assert str(p) in load_error(None)
    p.write_text("name: envpicked\n")
    assert load_config().name == "envpicked"


def test_directory_instead_of_file(tmp_path):
    msg = load_error(tmp_path)
    assert str(tmp_path) in msg and "directory" in msg, msg


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0,
    reason="root (and Windows) ignore chmod 000, so the file stays readable; .ci/run runs this test "
    "as a user without root (scripts/test-unprivileged)",
)
def test_unreadable_file(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_text("name: x\n")
    p.chmod(0)
    try:
        msg = load_error(p)
    finally:
        p.chmod(0o600)
    assert "permission denied" in msg, msg


def test_not_utf8(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_bytes(b"name: x\nscheduler:\n  host: caf\xe9\n")
    msg = load_error(p)
    assert "line 3" in msg and "UTF-8" in msg and "0xe9" in msg, msg


def test_too_large(tmp_path):
    p = tmp_path / "cluster.yaml"
    p.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    msg = load_error(p)
    assert "too large" in msg and str(MAX_FILE_BYTES) in msg, msg


def test_file_errors_are_one_line_even_with_odd_names(tmp_path):
    p = tmp_path / "we\nird.yaml"
    p.write_text("workers:\n  - count: 0\n")
    msg = load_error(p)
    assert "workers[0].count" in msg


def test_models_are_frozen():
    cfg = parse_config("name: x\n")
    with pytest.raises(Exception):
        cfg.name = "y"  # type: ignore[misc]
    assert isinstance(cfg, ClusterConfig)


def test_permission_denied_message(tmp_path, monkeypatch):
    """The same case as test_unreadable_file, runnable as root: the OS refusal is simulated."""
    import clusterctl.topology.loading as loading_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    p = tmp_path / "cluster.yaml"
    p.write_text("name: x\n")
    monkeypatch.setattr(loading_module, "open", refuse, raising=False)
    msg = load_error(p)
    assert msg == f"{p}: permission denied; make it readable by this user"


# -- hardening: tags, placement shapes, hosts (issue 12) -------------------------------------------

FLEET = "hosts:\n  - name: ws1\n    address: 10.0.0.5\n"


@pytest.mark.parametrize(
    "text, line, tag",
    [
        ("name: !!python/object/apply:os.system ['true']\n", 1, "'!!python/object/apply:os.system'"),
        ("name: x\nscheduler: !!python/object:builtins.dict {}\n", 2, "'!!python/object:builtins.dict'"),
        ("workers:\n  - name: a\n    env: {A: !!python/name:os.system }\n", 3, "'!!python/name:os.system'"),
        ("!!python/name:os.system : 1\n", 1, "'!!python/name:os.system'"),
        ("workers:\n  - name: !custom a\n", 2, "'!custom'"),
    ],
)
def test_tags_are_refused_as_tags_not_as_syntax(text, line, tag):
    msg = config_error(text)
    assert msg.startswith(f"<config>, line {line}: ") and f"the tag {tag} is not allowed" in msg, msg
    assert "safely" in msg and "syntax" not in msg and "indentation" not in msg, msg


@pytest.mark.parametrize("text, words", [("name: !!int abc\n", "'abc' is not a !!int value"),
                                         ("workers:\n  - nanny: !!bool maybe\n", "'maybe' is not a !!bool value"),
                                         ("name: !!timestamp soon\n", "'soon' is not a !!timestamp value"),
                                         ("name: !!set [1]\n", "does not fit its value")])
def test_a_standard_tag_that_does_not_fit_its_value(text, words):
    msg = config_error(text)
    assert words in msg and "remove the tag" in msg and "line " in msg, msg


def test_standard_tags_still_work():
    assert parse_config("name: !!str 42\n").name == "42"
    assert parse_config("scheduler: !!map {port: !!int 9000}\n").scheduler.port == 9000


@pytest.mark.parametrize(
    "at, words",
    [
        ("{ws1: true}", "ws1: True is not a number of workers"),
        ("{ws1: '2'}", "ws1: '2' is not a number of workers"),
        ("{ws1: [1]}", "ws1: [1] is not a number of workers"),
        ("5", "5 is not a placement"),
        ("true", "True is not a placement"),
        ("[1, 2]", "[1, 2] is not a placement"),
        ("[ws1, {x: 1}]", "is not a placement"),
    ],
)
def test_bad_placement_says_what_at_takes(at, words):
    msg = config_error(FLEET + f"workers:\n  - name: a\n    at: {at}\n")
    assert msg.startswith("<config>, line 6: workers[0].at: ") and words in msg, msg
    assert "a host name (at: ws1), a list of names" in msg and "a map of name to worker count" in msg, msg
    assert "at.str" not in msg and "at.dict" not in msg and "Input should be" not in msg, msg


def test_at_as_a_list_goes_round_its_hosts():
    cfg = parse_config(FLEET + "scheduler: {host: 10.0.0.1}\nworkers:\n  - at: [ws1, localhost]\n  - name: b\n"
                       "    at: [localhost, ws1]\n    count: 3\n")
    first, second = cfg.workers
    assert first.count == 2 and first.placement() == ["ws1", "localhost"]
    assert second.placement() == ["localhost", "ws1", "localhost"]
    assert cfg.remote_hosts() == ["ws1"] and cfg.tls_enabled


@pytest.mark.parametrize("at, words", [("[ws1, ws1]", "'ws1' is listed twice"), ("[]", "an empty list"),
                                       ("[ws1, ws9]", "'ws9' is not a host")])
def test_bad_placement_lists(at, words):
    msg = config_error(FLEET + f"workers:\n  - at: {at}\n")
    assert "workers[0].at" in msg and words in msg, msg


@pytest.mark.parametrize("name", ["localhost", "LocalHost"])
def test_a_host_named_localhost_is_refused(name):
    # It used to replace this machine: every worker without `at:` went over SSH to 10.0.0.5.
    msg = config_error(f"hosts:\n  - name: {name}\n    address: 10.0.0.5\nworkers:\n  - count: 2\n")
    assert msg.startswith("<config>, line 2: hosts[0].name: ") and f"{name!r} is reserved" in msg, msg
    assert "this machine" in msg and "such as 'ws1'" in msg, msg


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.5", "'[::1]'", "localhost"])
def test_loopback_bind_on_another_machine_is_refused(bind):
    text = FLEET.replace("10.0.0.5\n", f"10.0.0.5\n    bind: {bind}\n") + "workers:\n  - at: ws1\n"
    msg = config_error(text)
    assert msg.startswith("<config>, line 4: hosts[0].bind: ") and "is loopback on host 'ws1' (10.0.0.5)" in msg, msg
    assert "drop `bind:`" in msg and "address on the cluster's network" in msg, msg


def test_loopback_bind_is_fine_where_the_address_is_loopback_too():
    """127.0.0.x over SSH is how one machine plays several (the fleet tests): its loopback is ours."""
    cfg = parse_config("hosts:\n  - name: ws2\n    address: 127.0.0.2\n    bind: 127.0.0.2\nworkers:\n  - at: ws2\n")
    assert cfg.host("ws2").remote and cfg.worker_bind(cfg.workers[0], "ws2") == "127.0.0.2"


def test_loopback_group_host_on_another_machine_is_refused():
    msg = config_error(FLEET + "workers:\n  - at: ws1\n    host: 127.0.0.1\n")
    assert msg.startswith("<config>, line 6: workers[0].host: ") and "runs on host 'ws1' (10.0.0.5)" in msg, msg
    assert "drop `host:`" in msg, msg


@pytest.mark.parametrize("address, remote", [
    ("localhost", False), ("LOCALHOST", False), ("localhost.", False), ("127.0.0.1", False), ("::1", False),
    ("[::1]", False), ("0:0:0:0:0:0:0:1", False), ("::ffff:127.0.0.1", False),
    ("127.0.0.2", True), ("10.0.0.5", True), ("ws1", True), ("localhost.example.org", True),
])
def test_which_addresses_are_reached_without_ssh(address, remote):
    cfg = parse_config(f"hosts:\n  - name: h\n    address: {address!r}\n")
    assert cfg.host("h").remote is remote
    # Every spelling of this machine is also loopback; 127.0.0.2 is loopback yet reached over SSH.
    if not remote:
        assert is_loopback(address)


def test_a_local_spelling_gives_a_local_scheduler():
    cfg = parse_config("hosts:\n  - name: me\n    address: '[::1]'\nscheduler:\n  at: me\n  port: 0\n")
    assert not cfg.scheduler_remote and cfg.scheduler.host == "127.0.0.1"


def test_ssh_port_hint_is_not_the_scheduler_port_hint():
    msg = config_error("hosts:\n  - name: ws1\n    address: 10.0.0.5\n    port: 0\n")
    assert "hosts[0].port" in msg and "(got 0)" in msg and "SSH port" in msg, msg
    assert "any free port" not in msg, msg
    assert "0 for any free port" in config_error("scheduler:\n  port: 70000\n")


def test_equal_ports_clash_even_without_the_dashboard():
    # Checked with a real `dask scheduler --no-dashboard --port P --dashboard-address 127.0.0.1:P`:
    # its HTTP server (/health) still binds P, and the start fails with "Address already in use".
    msg = config_error("scheduler:\n  port: 9000\n  dashboard_port: 9000\n  dashboard: false\n")
    assert "scheduler.dashboard_port" in msg and "served even with `dashboard: false`" in msg, msg
