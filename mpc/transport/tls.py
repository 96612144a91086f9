"""Keys and certificates for mutually authenticated TLS 1.3 between the three roles.

`write_keys(DIR)` (behind `pspec keygen DIR`) makes a private CA and, for each role, an
EC P-256 key and a certificate signed by the CA whose common name and DNS subject
alternative name are the role ("client", "server", "dealer"):

    DIR/ca.pem  ca.key  client.pem client.key  server.pem server.key  dealer.pem dealer.key

Keys are written with mode 0600. Every party gets ca.pem plus its own pair; ca.key stays
with whoever issues certificates. A link trusts only certificates signed by that CA and
checks that the peer's certificate names the role it expects.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import ssl
from pathlib import Path

from mpc.transport.errors import HandshakeError, TlsConfigError

ROLES = ("client", "server", "dealer")
CA_NAME = "pspec CA"


def _files(directory: Path) -> list[Path]:
    names = ["ca.pem", "ca.key"] + [f"{r}.{ext}" for r in ROLES for ext in ("pem", "key")]
    return [directory / n for n in names]


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with its final mode (a key is never readable
    by others, not even for a moment), then rename over any old file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_keys(directory: str | os.PathLike, *, force: bool = False, days: int = 825) -> list[Path]:
    """Create the CA and the three role certificates in `directory` (created if missing).

    Refuses to replace existing files unless `force` (a new CA invalidates every old
    certificate, so all files are replaced together). Returns the paths written.
    Raises TlsConfigError for an unusable directory or existing keys.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TlsConfigError(f"{directory} exists and is not a directory")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise TlsConfigError(f"cannot create {directory}: {err.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise TlsConfigError(f"{directory} is not writable")
    existing = [p.name for p in _files(directory) if p.exists()]
    if existing and not force:
        raise TlsConfigError(f"{directory} already holds {', '.join(existing)}: pass --force to replace them")

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name(CA_NAME)).issuer_name(name(CA_NAME))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=True, crl_sign=True,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    written = []
    ca_pem, ca_key_path = directory / "ca.pem", directory / "ca.key"
    _write(ca_key_path, pem_key(ca_key), 0o600)
    _write(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    written += [ca_pem, ca_key_path]
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(role)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(role)]), critical=False)
                # Any role may be either TLS end (the server listens for the client, and
                # may dial the dealer), so every certificate serves both ways.
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write(directory / f"{role}.key", pem_key(key), 0o600)
        _write(directory / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        written += [directory / f"{role}.pem", directory / f"{role}.key"]
    return written


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """One party's TLS material: the trusted CA, its own certificate and key."""

    role: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, role: str) -> "TlsConfig":
        """Load and check DIR/ca.pem and DIR/<role>.pem/.key (as written by `pspec keygen`)."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization

        if role not in ROLES:
            raise TlsConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        directory = Path(directory)
        if not directory.is_dir():
            raise TlsConfigError(f"no key directory {directory}: create one with `pspec keygen {directory}`")
        cfg = cls(role, directory / "ca.pem", directory / f"{role}.pem", directory / f"{role}.key")
        for path in (cfg.ca_file, cfg.cert_file, cfg.key_file):
            if not path.is_file():
                raise TlsConfigError(f"missing {path}: create the keys with `pspec keygen {directory}`")

        def cert(path: Path):
            try:
                return x509.load_pem_x509_certificate(path.read_bytes())
            except (ValueError, OSError):
                raise TlsConfigError(f"{path} is not a PEM certificate") from None

        ca, mine = cert(cfg.ca_file), cert(cfg.cert_file)
        try:
            key = serialization.load_pem_private_key(cfg.key_file.read_bytes(), password=None)
        except (ValueError, TypeError, OSError):
            raise TlsConfigError(f"{cfg.key_file} is not an unencrypted PEM private key") from None
        names = cert_names(mine)
        if role not in names:
            raise TlsConfigError(f"{cfg.cert_file} is a certificate for {'/'.join(names)}, not {role}")
        try:
            mine.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise TlsConfigError(f"{cfg.cert_file} is not signed by {cfg.ca_file}") from None
        if key.public_key() != mine.public_key():
            raise TlsConfigError(f"{cfg.key_file} does not belong to {cfg.cert_file}")
        return cfg

    def context(self, server_side: bool) -> ssl.SSLContext:
        """TLS 1.3 only, certificates required both ways, trusting only our CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # the peer's role is checked instead (`check_peer_role`)
        ctx.verify_mode = ssl.CERT_REQUIRED
        if server_side:
            ctx.num_tickets = 0  # no session resumption; no post-handshake tickets on the wire
        try:
            ctx.load_verify_locations(cafile=str(self.ca_file))
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as err:
            raise TlsConfigError(f"cannot load TLS files for {self.role}: {err}") from None
        return ctx


def cert_names(cert) -> list[str]:
    """DNS subject alternative names of a `cryptography` certificate, else its CN."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def peer_role(peercert: dict, expected: tuple[str, ...], peer: str) -> str:
    """The role a verified peer certificate (ssl's dict form) names; it must be expected."""
    names = [v for k, v in peercert.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        names = [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]
    for role in expected:
        if role in names:
            return role
    raise HandshakeError(f"{peer} presented a certificate for {'/'.join(names) or 'nobody'}, "
                         f"expected {' or '.join(expected)}")
