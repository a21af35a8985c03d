from clusterctl.runtime.tuning import DEFAULTS, apply_defaults


def test_apply_defaults_fills_only_what_is_missing():
    env = {"OMP_NUM_THREADS": "4", "PATH": "/bin"}
    added = apply_defaults(env)
    assert env["OMP_NUM_THREADS"] == "4" and "OMP_NUM_THREADS" not in added
    assert env["PATH"] == "/bin"
    assert added == {k: v for k, v in DEFAULTS.items() if k != "OMP_NUM_THREADS"}
    assert all(env[k] == v for k, v in added.items())
    assert apply_defaults(env) == {}  # idempotent


def test_defaults_are_valid_dask_settings():
    import dask.config
    import distributed  # noqa: F401 - registers the distributed.* defaults
    from dask.utils import parse_timedelta

    for key, value in DEFAULTS.items():
        if key.startswith("DASK_"):
            path = key[len("DASK_"):].lower().replace("__", ".").replace("_", "-")
            assert dask.config.get(path) is not None, path  # a real key, not a typo
            assert 0 < parse_timedelta(value) <= 1
        else:
            assert int(value) >= 1
