"""When forking from a host's server is the same as exec'ing: the environment rule (pure)."""

from clusterctl.remote.forkserver import differs, neutral
from clusterctl.runtime.entry import entry_point


def test_session_and_dask_variables_do_not_matter():
    base = {"PATH": "/usr/bin", "HOME": "/root", "SSH_CONNECTION": "10.0.0.1 5000 10.0.0.2 22"}
    env = {**base, "SSH_CONNECTION": "10.0.0.1 5001 10.0.0.2 22", "DASK_DISTRIBUTED__X": "1",
           "CLUSTERCTL_TAG": "t", "SPT_NOENV": "1", "PYTHONUNBUFFERED": "1"}
    assert differs(base, env) == []


def test_a_variable_read_at_import_refuses_whether_added_changed_or_removed():
    base = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"}
    assert differs(base, {**base, "OMP_NUM_THREADS": "1"}) == ["OMP_NUM_THREADS"]
    assert differs(base, {**base, "PATH": "/other"}) == ["PATH"]
    assert differs(base, {"PATH": "/usr/bin"}) == ["LD_LIBRARY_PATH"]
    assert not neutral("PYTHONPATH") and neutral("DASK_X") and neutral("SSH_AUTH_SOCK")


def test_only_dask_commands_are_forked():
    assert entry_point(["/v/bin/python", "-m", "distributed.cli.dask_worker", "tcp://h:1"])[0] == \
        "distributed.cli.dask_worker"
    assert entry_point(["/v/bin/dask", "worker", "tls://h:1", "--name", "w-0"])[1] == ["tls://h:1", "--name", "w-0"]
    assert entry_point(["/bin/sleep", "300"]) is None
    assert entry_point([]) is None
