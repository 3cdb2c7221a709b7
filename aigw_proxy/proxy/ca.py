"""The CA that mitmproxy uses to sign per-host certificates for intercepted AI-provider hosts.

mitmproxy reads exactly one file, ``<confdir>/mitmproxy-ca.pem``: a private key, then the CA certificate
it signs with, then optionally that CA's chain (its issuer first, up to the root). A bad file does not
stop mitmproxy: it only logs the error and then fails every intercepted handshake. So everything here
checks a CA up front and raises :class:`CAError` with a message the operator can act on.

Files in confdir (0700):

* ``mitmproxy-ca.pem`` (0600): PKCS8 key + CA cert + chain certs. Written atomically (temp file created
  0600, then renamed), so the key is never readable by others, not even briefly.
* ``mitmproxy-ca-cert.pem`` (0644): CA cert + chain certs, for clients. This is what :func:`export_ca_pem`
  returns.

What mitmproxy 12 does with chain certs (verified in tests/unit/test_ca.py):

* Every leaf is signed by the *first* certificate in ``mitmproxy-ca.pem`` and reuses that CA's key pair,
  so the CA's key type is also the leaf key type. A generated CA is ECDSA P-256: every client handshake is
  signed with the leaf's key, and a P-256 signature costs the proxy a small fraction of an RSA-2048 one (see
  the benchmark's new-connection case). Every agent's TLS stack accepts it (Node, Python and curl in
  tests/e2e/test_ec_ca_clients.py; the real agents, Codex's Rust and OpenCode's Bun among them, in
  tests/agents/). An RSA CA, generated before or imported with ``ca init``, keeps working.
* If the file holds more than one certificate, ``CertStore.from_files`` sets ``default_chain_file`` to the
  file and ``default_chain_certs`` to all its certs. For TLS over TCP mitmproxy loads that file as the
  server context's verify store (``load_verify_locations``) and OpenSSL's automatic chain building then
  sends leaf + CA cert + chain certs (including the root, if present). QUIC sends ``default_chain_certs``.
* If the file holds a single certificate, only the leaf is sent. That is right for a self-signed root, but
  for an intermediate a client trusting the root cannot build a path. So we refuse an intermediate
  without its issuer (:func:`import_ca` says what to append).

What a client needs to trust: the *last* certificate of ``mitmproxy-ca-cert.pem`` (the root; for our own
generated CA, the only one). Loading the whole file as a CA bundle also works. Trusting only an
intermediate works for clients that allow partial chains (Python 3.13's ``create_default_context()``,
curl) but not for plain OpenSSL defaults.

Python 3.13's ``ssl.create_default_context()`` sets ``VERIFY_X509_STRICT``. It rejects leaves chaining
to a CA cert whose BasicConstraints is not critical, or that lacks KeyUsage or a SubjectKeyIdentifier,
or (for a non-root) an AuthorityKeyIdentifier. Those clients (the anthropic and openai SDKs among them)
would fail every handshake, so such CAs are refused too.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aigw_proxy.fsutil import fsync_dir

log = logging.getLogger(__name__)

CA_FILE = "mitmproxy-ca.pem"  # the only file mitmproxy reads; the "mitmproxy" basename is fixed
CERT_FILE = "mitmproxy-ca-cert.pem"
# Written by mitmproxy when *it* creates a CA; stale (and misleading) once the CA changes.
STALE_SIBLINGS = ("mitmproxy-ca.p12", "mitmproxy-ca-cert.p12", "mitmproxy-ca-cert.cer")

CA_COMMON_NAME = "aigw-proxy CA"
CA_ORGANIZATION = "aigw-proxy"
CA_VALIDITY = dt.timedelta(days=3650)
CA_BACKDATE = dt.timedelta(days=2)  # like mitmproxy: tolerate clients with a slow clock
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what TLS clients support

CAKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_NO_HARDLINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


class CAError(Exception):
    """The CA cannot be used. The message is shown to the operator as is."""


@dataclass(frozen=True)
class CAInfo:
    confdir: Path
    cert_path: Path  # public cert PEM (CA cert + chain) to give to clients
    subject: str  # RFC 4514 subject of the signing CA cert
    not_after: dt.datetime  # UTC, of the signing CA cert
    fingerprint_sha256: str  # of the signing CA cert, "AB:CD:..." like `openssl x509 -fingerprint -sha256`


# ---------------------------------------------------------------------------------------------- public


def ensure_ca(confdir: Path) -> CAInfo:
    """Load and validate the CA in ``confdir``, generating one first if there is none.

    An existing ``mitmproxy-ca.pem`` is never overwritten (if it is unusable, CAError says so).
    ``mitmproxy-ca-cert.pem`` is (re)written when it is missing or does not match the CA.
    """
    confdir = Path(confdir).expanduser()
    ca_file = confdir / CA_FILE
    if not os.path.lexists(ca_file):
        _make_confdir(confdir)
        key, cert = _generate_ca()
        if not _write_file(ca_file, _bundle(key, [cert]), 0o600, replace=False):
            log.info("another process created %s first; using that CA", ca_file)
        else:
            log.info("generated a new CA in %s", ca_file)
    info, certs = _validate(confdir)
    _write_public_cert(confdir, certs)
    return info


def import_ca(confdir: Path, cert_file: Path, key_file: Path) -> CAInfo:
    """Install an operator's CA (replacing the current one) after checking that mitmproxy can use it.

    ``cert_file``: PEM, the CA cert mitmproxy signs with, then (for an intermediate) its issuer, then that
    one's issuer, ... up to the root. ``key_file``: the CA cert's unencrypted private key, PEM
    (PKCS8 or traditional "RSA/EC PRIVATE KEY"), RSA or EC. Both may be the same file.
    A running proxy only picks up the new CA when restarted.
    """
    confdir = Path(confdir).expanduser()
    cert_name, key_name = str(cert_file), str(key_file)
    certs = _parse_certs(_read(Path(cert_file), "certificate file"), cert_name)
    key = _parse_key(_read(Path(key_file), "key file"), key_name)
    _check_ca(key, certs, cert_name, key_name)
    bundle = _bundle(key, certs)
    _load_bundle(bundle, "the new CA file")  # what mitmproxy will read must parse the same way

    _make_confdir(confdir)
    _write_file(confdir / CA_FILE, bundle, 0o600, replace=True)
    _write_public_cert(confdir, certs)
    info, _ = _validate(confdir)
    log.info("imported CA %s (%s) into %s", info.subject, info.fingerprint_sha256, confdir)
    return info


def export_ca_pem(confdir: Path) -> str:
    """The public certificate PEM for clients (CA cert, then chain certs), creating the CA if needed."""
    return ensure_ca(confdir).cert_path.read_text()


def validate_ca(confdir: Path) -> CAInfo:
    """Check ``<confdir>/mitmproxy-ca.pem`` the way mitmproxy will load it. Read-only.

    Raises CAError if the file is missing or unreadable, has no (or an encrypted) key, the key does not
    match the CA cert, the cert is not a CA, is expired or not yet valid, the chain is broken, or strict
    (Python 3.13) clients would reject certificates it issues.
    """
    return _validate(Path(confdir).expanduser())[0]


# ---------------------------------------------------------------------------------------------- checks


def _validate(confdir: Path) -> tuple[CAInfo, list[x509.Certificate]]:
    ca_file = confdir / CA_FILE
    if not os.path.lexists(ca_file):
        raise CAError(
            f"no CA found: {ca_file} does not exist (generate one by starting the proxy, or import one)"
        )
    raw = _read(ca_file, "CA file")
    key, certs = _load_bundle(raw, str(ca_file))
    _check_ca(key, certs, str(ca_file), str(ca_file), fix=f"import a new CA, or delete {ca_file} to "
              "generate a new one (clients then have to trust the new CA)")
    mode = ca_file.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s holds the CA private key but has mode %o; run: chmod 600 %s", ca_file, mode, ca_file)
    cert = certs[0]
    info = CAInfo(
        confdir=confdir,
        cert_path=confdir / CERT_FILE,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )
    return info, certs


def _load_bundle(raw: bytes, name: str) -> tuple[CAKey, list[x509.Certificate]]:
    """Parse a mitmproxy-ca.pem exactly as mitmproxy's ``CertStore.from_files`` does."""
    if not _PEM_BLOCK.search(raw):
        raise CAError(f"{name} is not a PEM file (expected a private key and a certificate, both PEM)")
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise CAError(f"the private key in {name} is encrypted; mitmproxy needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        # cryptography's error for "no key" is not helpful; find out which case it is
        _parse_key(raw, name)
        raise CAError(f"the private key in {name} cannot be loaded") from None
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError:
        certs = _parse_certs(raw, name)  # raises a precise error
    return _checked_key(key, name), certs


def _check_ca(
    key: CAKey, certs: list[x509.Certificate], cert_name: str, key_name: str, fix: str = ""
) -> None:
    fix = f"; {fix}" if fix else ""
    ca = certs[0]
    if key.public_key() != ca.public_key():
        where = f"in {key_name}" if key_name != cert_name else "in the file"
        raise CAError(
            f"CA key {where} does not match the certificate in {cert_name} (the first certificate must be "
            f"the one that belongs to the key){fix}"
        )
    now = dt.datetime.now(dt.UTC)
    for i, cert in enumerate(certs):
        if i == 0:
            what = cert_name if len(certs) == 1 else f"the first certificate in {cert_name}"
        else:
            what = f"certificate #{i + 1} ({_cn(cert)}) in {cert_name}"
        _check_is_strict_ca(cert, what, fix)
        when = f"the CA certificate in {cert_name}" if i == 0 else what
        if cert.not_valid_after_utc < now:
            raise CAError(f"{when} expired on {cert.not_valid_after_utc:%Y-%m-%d}{fix}")
        if cert.not_valid_before_utc > now:
            raise CAError(
                f"{when} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                f"(is the system clock right?){fix}"
            )
    for i in range(1, len(certs)):
        child, issuer = certs[i - 1], certs[i]
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CAError(
                f"the certificates in {cert_name} are not a chain: #{i + 1} ({_cn(issuer)}) did not issue "
                f"#{i} ({_cn(child)}); put the CA certificate first, then its issuer, and so on up to the "
                f"root{fix}"
            ) from None
        _check_key_ids(child, issuer, cert_name, fix)
    if len(certs) == 1 and not _self_issued(ca):
        raise CAError(
            f"{cert_name} holds an intermediate CA ({_cn(ca)}, issued by {_name(ca.issuer)}) but not the "
            f"certificate that issued it: mitmproxy only sends a chain to clients when the file has more "
            f"than one certificate, so clients trusting the root would reject every connection; append the "
            f"issuer's certificate (and its issuers, up to the root) to {cert_name}{fix}"
        )


def _check_is_strict_ca(cert: x509.Certificate, what: str, fix: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise CAError(
            f"{what} is not a CA certificate (no BasicConstraints extension){fix}"
        ) from None
    if not bc.value.ca:
        raise CAError(
            f"{what} is not a CA certificate (BasicConstraints CA=false); use the CA "
            f"certificate, not a server certificate{fix}"
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise CAError(
            f"{what} may not sign certificates (KeyUsage without keyCertSign){fix}"
        )
    strict = "Python 3.13+ clients (strict X.509 verification) would reject every connection"
    if not bc.critical:
        raise CAError(f"{what} has a BasicConstraints extension not marked critical: "
                      f"{strict}; reissue it with basicConstraints=critical,CA:TRUE{fix}")
    if ku is None:
        raise CAError(f"{what} has no KeyUsage extension: {strict}; reissue it with "
                      f"keyUsage=critical,keyCertSign,cRLSign{fix}")
    try:
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        raise CAError(f"{what} has no SubjectKeyIdentifier extension: {strict}; reissue it "
                      f"with subjectKeyIdentifier=hash{fix}") from None
    if not _self_issued(cert):
        try:
            cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        except x509.ExtensionNotFound:
            raise CAError(f"{what} has no AuthorityKeyIdentifier extension: {strict}; "
                          f"reissue it with authorityKeyIdentifier=keyid{fix}") from None


def _check_key_ids(child: x509.Certificate, issuer: x509.Certificate, cert_name: str, fix: str) -> None:
    try:
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:  # already reported by _check_is_strict_ca, or a self-issued child
        return
    if aki is not None and aki != ski:
        raise CAError(
            f"the AuthorityKeyIdentifier of {_cn(child)} does not match the SubjectKeyIdentifier of its "
            f"issuer {_cn(issuer)} in {cert_name}; clients would reject the chain{fix}"
        )


def _checked_key(key: object, name: str) -> CAKey:
    """The key, if mitmproxy can sign with it; raises CAError saying why not otherwise."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise CAError(f"the RSA key in {name} has {key.key_size} bits; at least 2048 are needed "
                          "(TLS clients reject smaller keys, and mitmproxy's certificates reuse the CA key)")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in EC_CURVES:
            raise CAError(f"the EC key in {name} uses curve {key.curve.name}; use P-256, P-384 or P-521")
        return key
    kind = type(key).__name__.lstrip("_")
    raise CAError(f"the key in {name} is an unsupported key type ({kind}); mitmproxy can only sign with "
                  "RSA or EC keys")


# ---------------------------------------------------------------------------------------------- parsing


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise CAError(f"{what} {path} is a directory, not a file") from None
    except OSError as e:
        raise CAError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _parse_key(raw: bytes, name: str) -> CAKey:
    """The one private key in a PEM file holding any mix of keys, certs and parameters."""
    blocks = [(label, b) for label, b in ((m[1], m[0]) for m in _PEM_BLOCK.finditer(raw))
              if label.endswith(b"PRIVATE KEY")]
    if not blocks:
        if _looks_like_der(raw):
            raise CAError(f"no private key found in {name}: it looks like DER; convert it with "
                          f"`openssl pkey -inform DER -in {name} -out key.pem`")
        raise CAError(f"no private key found in {name} (expected a -----BEGIN PRIVATE KEY----- block)")
    if len(blocks) > 1:
        raise CAError(f"{name} holds {len(blocks)} private keys; give a file with only the CA's key")
    label, block = blocks[0]
    if label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block:
        raise CAError(f"the private key in {name} is encrypted; mitmproxy needs it unencrypted: "
                      f"`openssl pkey -in {name} -out key-plain.pem`")
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise CAError(f"the private key in {name} cannot be read: {e}") from None
    return _checked_key(key, name)


def _parse_certs(raw: bytes, name: str) -> list[x509.Certificate]:
    blocks = [m[0] for m in _PEM_BLOCK.finditer(raw) if m[1] == b"CERTIFICATE"]
    if not blocks:
        if _looks_like_der(raw):
            raise CAError(f"no certificate found in {name}: it looks like DER; convert it with "
                          f"`openssl x509 -inform DER -in {name} -out cert.pem`")
        raise CAError(f"no certificate found in {name} (expected a -----BEGIN CERTIFICATE----- block)")
    certs = []
    for i, block in enumerate(blocks, 1):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise CAError(f"certificate #{i} in {name} cannot be read: {e}") from None
    return certs


def _looks_like_der(raw: bytes) -> bool:
    return raw[:1] == b"\x30"  # ASN.1 SEQUENCE


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "an empty name"


# ---------------------------------------------------------------------------------------------- writing


def _generate_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANIZATION),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    not_before = dt.datetime.now(dt.UTC) - CA_BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _certs_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _bundle(key: CAKey, certs: list[x509.Certificate]) -> bytes:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem + _certs_pem(certs)


def _make_confdir(confdir: Path) -> None:
    try:
        if not confdir.is_dir():
            confdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(confdir, 0o700)  # mkdir's mode is subject to the umask
    except OSError as e:
        raise CAError(f"cannot create the CA directory {confdir}: {e.strerror or e}") from None


def _write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> bool:
    """Atomically write ``path`` with ``mode``. Returns False if ``replace`` is off and it exists."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    except OSError as e:
        raise CAError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent: never clobbers a CA made concurrently
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in _NO_HARDLINKS:
                    raise
                if os.path.lexists(path):  # no hard links on this filesystem: check, then rename
                    return False
                os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    except OSError as e:
        raise CAError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _write_public_cert(confdir: Path, certs: list[x509.Certificate]) -> None:
    """Make mitmproxy-ca-cert.pem match the CA; drop mitmproxy's other copies if it did not."""
    path = confdir / CERT_FILE
    data = _certs_pem(certs)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    _write_file(path, data, 0o644, replace=True)
    for sibling in STALE_SIBLINGS:
        try:
            (confdir / sibling).unlink()
            log.info("removed %s: it held a different CA certificate", confdir / sibling)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CAError(f"cannot remove the stale {confdir / sibling} ({e.strerror or e}); it holds an "
                          "old CA certificate, delete it by hand") from None
