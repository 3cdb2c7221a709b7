"""Throwaway X.509 material for tests: CAs, intermediates, server certs and TLS contexts.

Everything is built to pass Python 3.13's strict verification (``VERIFY_X509_STRICT``, the default of
``ssl.create_default_context()``): CA certs carry a critical BasicConstraints, a critical KeyUsage with
keyCertSign and a SubjectKeyIdentifier; every issued cert carries an AuthorityKeyIdentifier.
Keys are EC P-256 by default because they are fast to generate; pass ``key=`` for RSA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Certificate = x509.Certificate
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh private key: "ec" (P-256) or "rsa" (2048 bits)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _issue(
    subject_cn: str,
    key: PrivateKey,
    issuer: Certificate | None,
    issuer_key: PrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
    sans: Sequence[x509.GeneralName] = (),
    days: int = 365,
) -> Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    if issuer is None:  # self-signed
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_ca(cn: str = "Test Root CA", *, key: PrivateKey | None = None) -> tuple[Certificate, PrivateKey]:
    """A self-signed root CA (no path length limit, so it can issue intermediates)."""
    key = key or new_key()
    return _issue(cn, key, None, key, ca=True, days=3650), key


def make_intermediate(
    root_cert: Certificate,
    root_key: PrivateKey,
    cn: str = "Test Intermediate CA",
    *,
    key: PrivateKey | None = None,
) -> tuple[Certificate, PrivateKey]:
    """An intermediate CA issued by ``root_cert`` that may only issue leaf certs (pathlen 0)."""
    key = key or new_key()
    return _issue(cn, key, root_cert, root_key, ca=True, path_length=0, days=1825), key


def make_server_cert(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    hostnames: Sequence[str],
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    key: PrivateKey | None = None,
) -> tuple[Certificate, PrivateKey]:
    """A serverAuth leaf for ``hostnames`` and ``ips`` (all as SANs), issued by ``ca_cert``."""
    key = key or new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cn = hostnames[0] if hostnames else ips[0]
    return _issue(cn, key, ca_cert, ca_key, ca=False, sans=sans), key


def pem(obj: Certificate | PrivateKey | bytes) -> bytes:
    """PEM bytes of a certificate or an unencrypted PKCS8 private key (bytes pass through)."""
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pem(path: str | Path, *objs: Certificate | PrivateKey | bytes) -> Path:
    """Write certs and/or keys (or raw PEM bytes), in the given order, to ``path``."""
    path = Path(path)
    path.write_bytes(b"".join(pem(o) for o in objs))
    return path


def server_ssl_context(
    cert: Certificate, key: PrivateKey, chain: Sequence[Certificate] = ()
) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` (+ ``chain``, issuer first) for a stand-in upstream."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as d:  # ssl can only load a cert chain from a file
        ctx.load_cert_chain(write_pem(Path(d) / "server.pem", cert, *chain, key))
    return ctx


def client_ssl_context(*trusted: Certificate) -> ssl.SSLContext:
    """A client context trusting only ``trusted``, with Python 3.13's strict default flags."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=b"".join(pem(c) for c in trusted).decode())
    return ctx
