"""TLS by default, loopback included (issue 22): a peer holding another cluster's certificate is refused
and the scheduler's log names it; a broken CA file stops `up` with one line naming the file."""

from __future__ import annotations

import pytest

from clusterctl.runtime import tls
from clusterctl.topology import load_config, parse_config
from conftest import processes_under, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_a_certificate_from_another_cluster_is_refused_and_the_log_names_the_peer(cluster, tmp_path):
    from distributed import Client
    from distributed.security import Security

    cluster.cli("up", check=True)
    other = parse_config("name: other\n", source=tmp_path / "other" / "cluster.yaml")
    f = tls.ensure(other)  # another cluster's CA and client certificate, valid in themselves
    theirs = Security(tls_ca_file=str(f.ca), tls_client_cert=str(f.client_cert), tls_client_key=str(f.client_key),
                      require_encryption=True)
    with pytest.raises(OSError):
        Client(f"tls://127.0.0.1:{cluster.port}", security=theirs, timeout="5s")
    log = cluster.state / "logs" / "scheduler.log"
    line = wait_for(lambda: next((x for x in log.read_text().splitlines() if "TLS handshake failed" in x), None),
                    20, 0.2, "the scheduler's log line on the refused peer")
    assert "with remote 'tls://127.0.0.1:" in line, line  # the peer, by address and port
    cfg = load_config(cluster.config)
    from clusterctl.client.connect import client_kwargs

    with Client(f"tls://127.0.0.1:{cluster.port}", timeout="10s", **client_kwargs(cfg)) as mine:
        assert mine.submit(sum, [1, 2]).result(timeout=20) == 3  # its own certificate still connects


@pytest.mark.timeout(120)
def test_a_broken_ca_file_stops_up_with_one_line_naming_it(cluster):
    cluster.cli("up", check=True)
    cluster.cli("down", check=True)
    ca = cluster.state / "tls" / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
    res = cluster.cli("up")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(ca) in lines[0] and "is not a PEM certificate or key" in lines[0], lines[0]
    assert ca.read_text() == "-----BEGIN CERTIFICATE-----\nbroken\n", "never replaced behind the user's back"
    assert processes_under(cluster.root) == [], "nothing started"
