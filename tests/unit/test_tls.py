"""tls.py: a per-cluster CA and certificates, written atomically with private keys 0600."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509

from clusterctl.runtime import tls
from clusterctl.topology import parse_config
from clusterctl.errors import ClusterError

FLEET = (
    "name: lab\ntls:\n  enabled: true\n"
    "hosts:\n  - name: ws2\n    address: 10.0.0.2\n  - name: ws3\n    address: ws3.lan\n"
    "scheduler:\n  host: 10.0.0.1\n"
    "workers:\n  - at: {ws2: 1, ws3: 1}\n"
)


def sans(path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def test_ensure_makes_a_ca_and_leaves_with_private_keys(tmp_path):
    cfg = parse_config(FLEET, source=tmp_path / "cluster.yaml")
    f = tls.ensure(cfg)
    assert f.root == cfg.state_path / "tls"
    assert sorted(p.name for p in f.root.iterdir()) == sorted(tls.FILES)
    for key in (f.ca_key, f.node_key, f.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.root.stat().st_mode) == 0o700
    assert {"10.0.0.1", "10.0.0.2", "ws3.lan", "127.0.0.1", "localhost"} <= sans(f.node_cert)
    ca = x509.load_pem_x509_certificate(f.ca.read_bytes())
    for leaf in (f.node_cert, f.client_cert):
        cert = x509.load_pem_x509_certificate(leaf.read_bytes())
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_ensure_is_idempotent_and_reissues_only_what_changed(tmp_path):
    cfg = parse_config(FLEET, source=tmp_path / "cluster.yaml")
    f = tls.ensure(cfg)
    first = {p.name: p.read_bytes() for p in f.root.iterdir()}
    tls.ensure(cfg)
    assert {p.name: p.read_bytes() for p in f.root.iterdir()} == first
    # a new host's address must be in the node certificate: re-issued, same CA
    grown = parse_config(FLEET.replace("scheduler:", "  - name: ws4\n    address: 10.0.0.4\nscheduler:").replace(
        "{ws2: 1, ws3: 1}", "{ws2: 1, ws3: 1, ws4: 1}"), source=tmp_path / "cluster.yaml")
    tls.ensure(grown)
    assert f.ca.read_bytes() == first["ca.pem"] and f.client_cert.read_bytes() == first["client.pem"]
    assert "10.0.0.4" in sans(f.node_cert)


def test_expiring_leaves_are_renewed(tmp_path):
    cfg = parse_config(FLEET, source=tmp_path / "cluster.yaml")
    f = tls.ensure(cfg)
    before = f.node_cert.read_bytes()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=tls.VALID_DAYS - 10)
    tls.ensure(cfg, now=later)
    assert f.node_cert.read_bytes() != before


def test_client_security_and_env(tmp_path):
    cfg = parse_config(FLEET, source=tmp_path / "cluster.yaml")
    with pytest.raises(ClusterError, match="clusterctl up"):
        tls.client_security(cfg)
    f = tls.ensure(cfg)
    sec = tls.client_security(cfg)
    assert sec.require_encryption and sec.tls_ca_file == str(f.ca) and sec.tls_client_key == str(f.client_key)
    env = tls.client_env(cfg)
    assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == str(f.client_cert)
    # a bare Client("127.0.0.1:8786") then speaks TLS: Dask's default scheme
    assert env["DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME"] == "tls"
    plain = parse_config("name: lab\ntls: {enabled: false}\n", source=tmp_path / "cluster.yaml")
    assert tls.client_security(plain) is None and tls.client_env(plain) == {}


def test_tls_is_on_by_default_and_the_opt_out_on_loopback_says_what_it_costs(tmp_path):
    """Issue 22: TLS on every cluster, loopback included; `tls: {enabled: false}` stays the explicit opt-out,
    and validate and up then say in one line that any local user can run code as you."""
    default = parse_config("name: lab\n", source=tmp_path / "cluster.yaml")
    assert default.tls_enabled and default.protocol == "tls" and default.warnings() == []
    off = parse_config("name: lab\ntls: {enabled: false}\n", source=tmp_path / "cluster.yaml")
    assert not off.tls_enabled and off.protocol == "tcp"
    (line,) = off.warnings()
    assert "\n" not in line and "any local user can run code as you" in line
    # beyond loopback, plain TCP still needs `insecure: true` in words
    wide = parse_config("insecure: true\nscheduler: {host: 10.0.0.1}\n", source=tmp_path / "cluster.yaml")
    assert not wide.tls_enabled and "anyone who reaches these addresses" in wide.warnings()[0]
    loose = parse_config("insecure: true\n", source=tmp_path / "cluster.yaml")
    assert not loose.tls_enabled and loose.warnings()[0].startswith("insecure: true: plain TCP on loopback")


@pytest.fixture()
def made(tmp_path):
    cfg = parse_config("name: lab\n", source=tmp_path / "cluster.yaml")
    return cfg, tls.ensure(cfg)


def one_line_error(cfg) -> str:
    with pytest.raises(ClusterError) as info:
        tls.ensure(cfg)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_corrupt_ca_file_fails_naming_it_and_is_never_replaced(made):
    cfg, f = made
    f.ca.write_text("not a certificate\n")
    msg = one_line_error(cfg)
    assert msg.startswith(f"{f.ca} is not a PEM certificate or key") and "move" in msg
    assert f.ca.read_text() == "not a certificate\n", "left for the user to look at"


def test_half_a_ca_fails_naming_the_missing_file(made):
    cfg, f = made
    key = f.ca_key.read_bytes()
    f.ca_key.unlink()
    assert one_line_error(cfg).startswith(f"{f.ca_key} is missing beside {f.ca}")
    f.ca_key.write_bytes(key)
    f.ca.unlink()
    assert one_line_error(cfg).startswith(f"{f.ca} is missing beside {f.ca_key}")


def test_a_missing_or_broken_leaf_is_issued_again_from_the_ca(made):
    cfg, f = made
    ca = f.ca.read_bytes()
    f.node_cert.unlink()
    f.client_key.write_text("garbage")
    tls.ensure(cfg)
    assert f.ca.read_bytes() == ca and f.node_cert.exists() and b"PRIVATE KEY" in f.client_key.read_bytes()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a 0000 file: the unprivileged run (.ci/run) covers it")
def test_an_unreadable_ca_key_fails_naming_it(made):
    cfg, f = made
    f.ca_key.chmod(0)
    try:
        assert one_line_error(cfg) == f"cannot read {f.ca_key}: permission denied (the cluster's TLS files must be yours)"
    finally:
        f.ca_key.chmod(0o600)


def test_a_cluster_running_plain_tcp_from_before_the_default_gets_no_tls_variables(tmp_path):
    """Started before TLS became the default: its scheduler speaks tcp:// until its next `up`, and a client
    given TLS settings would be refused by it. Stopped, the topology decides again."""
    from clusterctl.runtime.ledger import Ledger, LedgerRecord, SchedulerRecord

    cfg = parse_config("name: lab\n", source=tmp_path / "cluster.yaml")
    tls.ensure(cfg)
    ledger = Ledger(cfg.state_path)
    ledger.write(LedgerRecord(state="running", scheduler=SchedulerRecord(address="tcp://127.0.0.1:8786")))
    assert tls.client_env(cfg) == {} and tls.client_security(cfg) is None
    ledger.write(LedgerRecord(state="running", scheduler=SchedulerRecord(address="tls://127.0.0.1:8786")))
    assert tls.client_env(cfg)["DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME"] == "tls"
    ledger.write(LedgerRecord(state="stopped", scheduler=SchedulerRecord(address="tcp://127.0.0.1:8786")))
    assert tls.client_security(cfg) is not None


def test_a_leaf_from_another_ca_of_the_same_name_is_issued_again_and_a_mixed_up_ca_is_refused(tmp_path):
    cfg = parse_config("name: lab\n", source=tmp_path / "a" / "cluster.yaml")
    twin = parse_config("name: lab\n", source=tmp_path / "b" / "cluster.yaml")  # same CA name, other keys
    f, g = tls.ensure(cfg), tls.ensure(twin)
    f.node_cert.write_bytes(g.node_cert.read_bytes())
    f.node_key.write_bytes(g.node_key.read_bytes())
    tls.ensure(cfg)
    assert f.node_cert.read_bytes() != g.node_cert.read_bytes(), "signed by the other CA: issued again"
    f.ca_key.write_bytes(g.ca_key.read_bytes())
    assert one_line_error(cfg).startswith(f"{f.ca_key} is not the key of {f.ca}")
