"""A per-cluster certificate authority and the certificates Dask's mutual TLS needs.

Dask's TLS is mutual and trusts any certificate its CA signed, so the CA is the
trust boundary: one CA per cluster, kept in ``<state>/tls/`` with every private
key 0600. Processes share one "node" certificate (its SANs list every address
of the fleet); clients get their own::

    >>> files = ensure(cfg)                       # doctest: +SKIP
    >>> Client(address, security=client_security(cfg))
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..topology import ClusterConfig
from ..errors import ClusterError
from .ledger import atomic_write

VALID_DAYS = 825  # what browsers accept for a leaf; the CA outlives it
RENEW_BEFORE = dt.timedelta(days=30)

FILES = ("ca.pem", "ca-key.pem", "node.pem", "node-key.pem", "client.pem", "client-key.pem")
# What a host running scheduler or workers needs: never the CA's key, never the client's.
NODE_FILES = ("ca.pem", "node.pem", "node-key.pem")


@dataclass(frozen=True)
class TlsFiles:
    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca-key.pem"

    @property
    def node_cert(self) -> Path:
        return self.root / "node.pem"

    @property
    def node_key(self) -> Path:
        return self.root / "node-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.root / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.root / "client-key.pem"


def tls_dir(cfg: ClusterConfig) -> Path:
    return cfg.state_path / "tls"


def files(cfg: ClusterConfig) -> TlsFiles:
    return TlsFiles(tls_dir(cfg))


def ensure(cfg: ClusterConfig, now: dt.datetime | None = None) -> TlsFiles:
    """Create what is missing, re-issue leaves that expire soon or lack an address. Idempotent."""
    try:
        return _ensure(cfg, now or dt.datetime.now(dt.timezone.utc))
    except ImportError as e:  # pragma: no cover - a dependency of clusterctl
        raise ClusterError("TLS needs the `cryptography` package: pip install cryptography") from e
    except OSError as e:
        raise ClusterError(f"cannot write TLS material in {tls_dir(cfg)}: {e.strerror or e}") from e


def _ensure(cfg: ClusterConfig, now: dt.datetime) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    f = files(cfg)
    f.root.mkdir(parents=True, exist_ok=True)
    os.chmod(f.root, 0o700)
    names = sorted(cfg.tls_names())
    have = [p for p in (f.ca, f.ca_key) if p.exists()]
    if len(have) == 1:  # half a CA: never replaced silently, every client holds the old one
        missing = f.ca_key if have[0] == f.ca else f.ca
        raise ClusterError(f"{missing} is missing beside {have[0]}: the cluster's CA is incomplete; restore it, "
                           f"or move {f.root} aside to make a new CA (clients then need `clusterctl env` again)")
    if have:
        ca_cert = _load(f.ca, x509.load_pem_x509_certificate)
        ca_key = _load(f.ca_key, lambda data: serialization.load_pem_private_key(data, password=None))
        if ca_cert.public_key().public_numbers() != ca_key.public_key().public_numbers():
            raise ClusterError(f"{f.ca_key} is not the key of {f.ca}: the cluster's CA is mixed up; restore the pair, "
                               f"or move {f.root} aside to make a new CA (clients then need `clusterctl env` again)")
        if ca_cert.not_valid_after_utc - RENEW_BEFORE < now:
            ca_cert = None
    else:
        ca_cert = None
    if ca_cert is None:  # a new CA invalidates every leaf it signed
        ca_key = _new_key()
        ca_cert = _issue(f"clusterctl CA for {cfg.name}", ca_key, ca_key, None, [], now, ca=True, days=VALID_DAYS * 2)
        _write_key(f.ca_key, ca_key)
        _write_cert(f.ca, ca_cert)
        for p in (f.node_cert, f.client_cert):
            p.unlink(missing_ok=True)
    for cert_path, key_path, common, sans in (
        (f.node_cert, f.node_key, f"clusterctl node of {cfg.name}", names),
        (f.client_cert, f.client_key, f"clusterctl client of {cfg.name}", []),
    ):
        if _leaf_ok(cert_path, key_path, ca_cert, sans, now):
            continue
        key = _new_key()
        _write_key(key_path, key)
        _write_cert(cert_path, _issue(common, key, ca_key, ca_cert, sans, now))
    return f


def _load(path: Path, parse):
    """One of the CA's files, parsed; a ClusterError naming it when it cannot be read or is not PEM."""
    try:
        return parse(path.read_bytes())
    except PermissionError as e:
        raise ClusterError(f"cannot read {path}: permission denied (the cluster's TLS files must be yours)") from e
    except OSError as e:
        raise ClusterError(f"cannot read {path}: {e.strerror or e}") from e
    except (ValueError, TypeError) as e:  # TypeError: a key that wants a password
        raise ClusterError(f"{path} is not a PEM certificate or key; restore it, or move {path.parent} aside to "
                           "make a new CA (clients then need `clusterctl env` again)") from e


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())  # fast to make; every OpenSSL speaks it


def _issue(common: str, key, signer_key, signer_cert, sans: list[str], now: dt.datetime, *, ca: bool = False, days: int = VALID_DAYS):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock offsets
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        # Mutual TLS: every process is a server to some peers and a client to others.
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in sans]), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _san(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _leaf_ok(cert_path: Path, key_path: Path, ca_cert, sans: list[str], now: dt.datetime) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)  # signed by this CA, not another of the same name
    except (OSError, ValueError, TypeError, InvalidSignature):  # TypeError: a key that wants a password
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        return False
    try:
        have = {str(v) for v in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)}
        have |= set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        have = set()
    return {str(_san(s).value) for s in sans} <= have


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(path, pem.decode(), mode=0o600)


def _write_cert(path: Path, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)


def speaks_tls(cfg: ClusterConfig) -> bool:
    """Whether a client of this cluster needs TLS. A running cluster's own scheduler address says (one
    started before TLS became the default keeps plain TCP until its next `up`); else the topology."""
    from .ledger import Ledger
    from .states import SERVING

    try:
        record = Ledger(cfg.state_path).read()
    except ClusterError:
        record = None
    address = record.scheduler.address if record is not None and record.state in SERVING else None
    return address.startswith("tls://") if address else cfg.tls_enabled


def client_security(cfg: ClusterConfig):
    """A ``distributed.Security`` for a Client of this cluster, or None when it runs plain TCP.

    >>> Client(client.client_address(cfg), security=client_security(cfg))   # doctest: +SKIP
    """
    if not speaks_tls(cfg):
        return None
    f = files(cfg)
    if not (f.ca.exists() and f.client_cert.exists() and f.client_key.exists()):
        raise ClusterError(f"cluster {cfg.name!r} uses TLS but {f.root} holds no client certificate; run `clusterctl up` first")
    from distributed.security import Security

    return Security(
        tls_ca_file=str(f.ca), tls_client_cert=str(f.client_cert), tls_client_key=str(f.client_key), require_encryption=True
    )


def client_env(cfg: ClusterConfig) -> dict[str, str]:
    """Dask configuration, as environment variables, that makes a plain ``Client(address)`` use TLS:
    an address without a scheme too (``Client("127.0.0.1:8786")``: Dask's default scheme)."""
    if not speaks_tls(cfg):
        return {}
    f = files(cfg)
    return {
        "DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME": "tls",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(f.ca),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(f.client_cert),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(f.client_key),
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    }
