"""aigw_proxy.proxy.ca: generation, import, export and validation, checked against mitmproxy's real CertStore
and real TLS handshakes with strict verification (Python 3.13's default flags, on every supported Python)."""

from __future__ import annotations

import datetime as dt
import os
import select
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from mitmproxy.certs import CertStore
from mitmproxy.net import tls as net_tls
from OpenSSL import SSL

from aigw_proxy.proxy import ca
from aigw_proxy.proxy.ca import CAError, CAInfo, ensure_ca, export_ca_pem, import_ca, validate_ca
from tests.support.certs import (
    client_ssl_context,
    make_ca,
    make_intermediate,
    make_server_cert,
    new_key,
    pem,
    write_pem,
)

HOST = "api.anthropic.com"


# ------------------------------------------------------------------------------------------- helpers


def mitm_handshake(confdir: Path, *trusted: x509.Certificate) -> list[x509.Certificate]:
    """Load ``confdir`` with mitmproxy's CertStore, issue a leaf for HOST the way TlsConfig does, serve it
    with the TLS context TlsConfig builds, and connect with a strict client trusting only ``trusted``.
    Returns the chain the proxy sent (leaf first). Raises ssl.SSLCertVerificationError on rejection."""
    store = CertStore.from_store(confdir, "mitmproxy", 2048)
    # TlsConfig always puts the SNI into the SANs; get_cert(HOST, []) would give an empty SAN extension,
    # which strict clients reject ("Empty Subject Alternative Name extension").
    entry = store.get_cert(HOST, [x509.DNSName(HOST)])
    server_ctx = net_tls.create_client_proxy_context(
        method=net_tls.Method.TLS_SERVER_METHOD,
        min_version=net_tls.DEFAULT_MIN_VERSION,
        max_version=net_tls.DEFAULT_MAX_VERSION,
        cipher_list=None,
        ecdh_curve=None,
        chain_file=entry.chain_file,
        alpn_select_callback=None,
        request_client_cert=False,
        extra_chain_certs=(),
        dhparams=store.dhparams,
    )

    def handshake(client: Callable[[socket.socket], list[x509.Certificate]]) -> list[x509.Certificate]:
        srv_sock, cli_sock = socket.socketpair()
        conn = SSL.Connection(server_ctx, srv_sock)
        conn.use_certificate(entry.cert.to_cryptography())
        conn.use_privatekey(entry.privatekey)
        conn.set_accept_state()

        def serve() -> None:
            try:
                conn.do_handshake()
            except SSL.Error:
                pass  # the client rejected us; the client side reports why

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            cli_sock.settimeout(10)
            return client(cli_sock)
        finally:
            cli_sock.close()
            t.join(10)
            srv_sock.close()

    def strict_client(sock: socket.socket) -> list[x509.Certificate]:
        with client_ssl_context(*trusted).wrap_socket(sock, server_hostname=HOST):
            return []

    def chain_reader(sock: socket.socket) -> list[x509.Certificate]:
        # What the server sent, read by pyOpenSSL (mitmproxy's own TLS library) without verifying it, so it
        # works on every supported Python (ssl's get_unverified_chain is 3.13+).
        tls = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), sock)
        tls.set_tlsext_host_name(HOST.encode())
        tls.set_connect_state()
        while True:  # the socket has a timeout, so it is non-blocking underneath: wait for each read
            try:
                tls.do_handshake()
                break
            except SSL.WantReadError:
                if not select.select([sock], [], [], 10)[0]:
                    raise TimeoutError("the TLS server did not answer") from None
        return tls.get_peer_cert_chain(as_cryptography=True) or []

    handshake(strict_client)  # raises ssl.SSLCertVerificationError if a strict client refuses the chain
    return handshake(chain_reader)


def file_mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def read_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def build_ca_cert(
    key,
    *,
    cn: str = "Odd CA",
    issuer: x509.Certificate | None = None,
    issuer_key=None,
    bc: bool | None = True,  # None: no BasicConstraints at all
    bc_critical: bool = True,
    key_usage: str | None = "ca",  # "ca", "no-certsign" or None
    ski: bool = True,
    aki: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A CA-ish cert with exactly the defect a test wants."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer_key or key
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
    )
    if bc is not None:
        b = b.add_extension(x509.BasicConstraints(ca=bc, path_length=None), critical=bc_critical)
    if key_usage:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=key_usage == "ca",
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if aki and issuer is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    return b.sign(signer, hashes.SHA256())


def traditional_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return tmp_path / "conf"


# ------------------------------------------------------------------------------------------- generation


def test_generate_writes_private_files_and_a_strict_ca(confdir: Path) -> None:
    old_umask = os.umask(0)  # the modes must not depend on the umask
    try:
        info = ensure_ca(confdir)
    finally:
        os.umask(old_umask)

    ca_file, cert_file = confdir / "mitmproxy-ca.pem", confdir / "mitmproxy-ca-cert.pem"
    assert file_mode(confdir) == 0o700
    assert file_mode(ca_file) == 0o600
    assert file_mode(cert_file) == 0o644
    assert sorted(p.name for p in confdir.iterdir()) == ["mitmproxy-ca-cert.pem", "mitmproxy-ca.pem"]

    raw = ca_file.read_bytes()
    assert raw.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(raw, None)
    # ECDSA P-256: the leaves reuse the CA key, and a P-256 handshake signature is far cheaper than RSA-2048's
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    cert = read_cert(ca_file)
    assert cert_file.read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
    assert key.public_key() == cert.public_key()

    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "aigw-proxy CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "aigw-proxy"
    now = dt.datetime.now(dt.UTC)
    assert abs(cert.not_valid_before_utc - (now - dt.timedelta(days=2))) < dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    assert info == CAInfo(
        confdir=confdir,
        cert_path=cert_file,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )
    # strict validation of a mitmproxy-issued leaf by cryptography's RFC 5280 verifier
    store = CertStore.from_store(confdir, "mitmproxy", 2048)
    leaf = store.get_cert(HOST, [x509.DNSName(HOST)]).cert.to_cryptography()
    PolicyBuilder().store(Store([cert])).build_server_verifier(x509.DNSName(HOST)).verify(leaf, [])


def test_an_rsa_ca_from_before_keeps_working(confdir: Path) -> None:
    """Data dirs made before CAs were EC hold an RSA-2048 CA: it is kept (never regenerated) and still signs."""
    confdir.mkdir(mode=0o700)
    root, key = make_ca("aigw-proxy CA", key=new_key("rsa"))
    (confdir / "mitmproxy-ca.pem").write_bytes(ca._bundle(key, [root]))
    os.chmod(confdir / "mitmproxy-ca.pem", 0o600)

    info = ensure_ca(confdir)

    assert info.fingerprint_sha256 == root.fingerprint(hashes.SHA256()).hex(":").upper()
    leaf = mitm_handshake(confdir, root)[0]
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)  # leaves reuse the CA key: still RSA


def test_ensure_is_idempotent_and_never_overwrites(confdir: Path) -> None:
    first = ensure_ca(confdir)
    before = (confdir / "mitmproxy-ca.pem").read_bytes()
    assert ensure_ca(confdir).fingerprint_sha256 == first.fingerprint_sha256
    assert (confdir / "mitmproxy-ca.pem").read_bytes() == before
    assert validate_ca(confdir) == first


def test_ensure_refuses_a_broken_ca_and_leaves_it_alone(confdir: Path) -> None:
    confdir.mkdir()
    root, root_key = make_ca()
    leaf, leaf_key = make_server_cert(root, root_key, [HOST])
    bad = write_pem(confdir / "mitmproxy-ca.pem", leaf_key, leaf).read_bytes()
    with pytest.raises(CAError, match=r"is not a CA certificate \(BasicConstraints CA=false\)"):
        ensure_ca(confdir)
    assert (confdir / "mitmproxy-ca.pem").read_bytes() == bad


def test_ensure_uses_a_ca_created_concurrently(confdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other_key = new_key("rsa")
    other, _ = make_ca("Other process CA", key=other_key)
    real_generate = ca._generate_ca

    def racing_generate():
        write_pem(confdir / "mitmproxy-ca.pem", other_key, other)  # another process wins the race
        return real_generate()

    monkeypatch.setattr(ca, "_generate_ca", racing_generate)
    info = ensure_ca(confdir)
    assert info.fingerprint_sha256 == other.fingerprint(hashes.SHA256()).hex(":").upper()
    assert read_cert(confdir / "mitmproxy-ca-cert.pem") == other
    assert not [p for p in confdir.iterdir() if p.name.endswith(".tmp")]


def test_ensure_repairs_a_missing_or_stale_public_cert(confdir: Path) -> None:
    info = ensure_ca(confdir)
    good = info.cert_path.read_bytes()
    info.cert_path.unlink()
    ensure_ca(confdir)
    assert info.cert_path.read_bytes() == good

    old, _ = make_ca("Old CA")
    write_pem(info.cert_path, old)
    for name in ca.STALE_SIBLINGS:
        (confdir / name).write_bytes(b"old")
    ensure_ca(confdir)
    assert info.cert_path.read_bytes() == good
    assert not any((confdir / name).exists() for name in ca.STALE_SIBLINGS)


def test_ensure_keeps_a_ca_that_mitmproxy_generated(confdir: Path) -> None:
    CertStore.create_store(confdir, "mitmproxy", 2048)
    mitm_files = {p.name: p.read_bytes() for p in confdir.iterdir()}
    info = ensure_ca(confdir)
    assert "CN=mitmproxy" in info.subject
    assert {p.name: p.read_bytes() for p in confdir.iterdir()} == mitm_files  # nothing rewritten/removed
    mitm_handshake(confdir, read_cert(info.cert_path))


def test_export_is_the_cert_file_without_key(confdir: Path) -> None:
    exported = export_ca_pem(confdir)  # creates the CA
    assert exported == (confdir / "mitmproxy-ca-cert.pem").read_text()
    assert "PRIVATE KEY" not in exported
    assert [c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(exported.encode())] == [
        read_cert(confdir / "mitmproxy-ca.pem").fingerprint(hashes.SHA256())
    ]
    assert export_ca_pem(confdir) == exported


def test_generated_ca_works_with_mitmproxy_and_strict_clients(confdir: Path) -> None:
    info = ensure_ca(confdir)
    sent = mitm_handshake(confdir, read_cert(info.cert_path))
    assert [c.subject.rfc4514_string() for c in sent] == [f"CN={HOST}"]  # single cert: leaf only
    other, _ = make_ca("Someone else")
    with pytest.raises(ssl.SSLCertVerificationError):
        mitm_handshake(confdir, other)


# ------------------------------------------------------------------------------------------- import


@pytest.mark.parametrize(
    ("kind", "key_format"), [("rsa", "traditional"), ("rsa", "pkcs8"), ("ec", "traditional"), ("ec", "pkcs8")]
)
def test_import_operator_root_ca(confdir: Path, tmp_path: Path, kind: str, key_format: str) -> None:
    ensure_ca(confdir)  # an existing generated CA is replaced
    for name in ca.STALE_SIBLINGS:
        (confdir / name).write_bytes(b"old CA")
    root, key = make_ca("Operator CA", key=new_key(kind))
    cert_file = write_pem(tmp_path / "cert.pem", root)
    key_file = write_pem(tmp_path / "key.pem", traditional_pem(key) if key_format == "traditional" else key)

    info = import_ca(confdir, cert_file, key_file)

    assert info.fingerprint_sha256 == root.fingerprint(hashes.SHA256()).hex(":").upper()
    assert info.subject == "CN=Operator CA"
    assert file_mode(confdir / "mitmproxy-ca.pem") == 0o600
    assert file_mode(confdir / "mitmproxy-ca-cert.pem") == 0o644
    assert export_ca_pem(confdir).encode() == pem(root)
    assert not any((confdir / name).exists() for name in ca.STALE_SIBLINGS)
    assert mitm_handshake(confdir, root)[0].public_key() == key.public_key()  # leaves reuse the CA key


def test_import_key_and_cert_from_one_file(confdir: Path, tmp_path: Path) -> None:
    root, key = make_ca("Combined")
    both = write_pem(tmp_path / "combined.pem", root, traditional_pem(key))  # cert first, then key
    assert import_ca(confdir, both, both).subject == "CN=Combined"
    mitm_handshake(confdir, root)


def test_import_intermediate_with_chain(confdir: Path, tmp_path: Path) -> None:
    root, root_key = make_ca("Corp Root CA")
    inter, inter_key = make_intermediate(root, root_key, "Corp Proxy Intermediate")
    cert_file = write_pem(tmp_path / "chain.pem", inter, root)
    key_file = write_pem(tmp_path / "key.pem", inter_key)

    info = import_ca(confdir, cert_file, key_file)

    assert info.subject == "CN=Corp Proxy Intermediate"
    assert export_ca_pem(confdir).encode() == pem(inter) + pem(root)
    # What mitmproxy makes of the file: signs with the first cert, remembers the whole chain.
    store = CertStore.from_store(confdir, "mitmproxy", 2048)
    assert store.default_ca.to_cryptography() == inter
    assert store.default_chain_file == confdir / "mitmproxy-ca.pem"
    assert [c.to_cryptography() for c in store.default_chain_certs] == [inter, root]
    leaf = store.get_cert(HOST, [x509.DNSName(HOST)]).cert.to_cryptography()
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(HOST))
    assert verifier.verify(leaf, [inter])[1:] == [inter, root]
    # In a real handshake mitmproxy sends leaf + intermediate + root, so trusting the root is enough,
    # even without VERIFY_X509_PARTIAL_CHAIN.
    sent = mitm_handshake(confdir, root)
    assert [c.subject.rfc4514_string() for c in sent] == [
        f"CN={HOST}", "CN=Corp Proxy Intermediate", "CN=Corp Root CA"
    ]


def test_intermediate_alone_is_refused_because_mitmproxy_would_send_no_chain(
    confdir: Path, tmp_path: Path
) -> None:
    root, root_key = make_ca("Corp Root CA")
    inter, inter_key = make_intermediate(root, root_key)
    # Prove the reason: written by hand, mitmproxy sends just the leaf and a root-trusting client fails.
    confdir.mkdir()
    write_pem(confdir / "mitmproxy-ca.pem", inter_key, inter)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        mitm_handshake(confdir, root)
    with pytest.raises(CAError, match=r"holds an intermediate CA .* but not the certificate that issued it"):
        validate_ca(confdir)
    with pytest.raises(CAError, match=r"append the issuer's certificate"):
        import_ca(
            tmp_path / "conf2", write_pem(tmp_path / "i.pem", inter), write_pem(tmp_path / "k.pem", inter_key)
        )


def test_failed_import_keeps_the_current_ca(confdir: Path, tmp_path: Path) -> None:
    before = ensure_ca(confdir)
    files = {p.name: p.read_bytes() for p in confdir.iterdir()}
    root, _ = make_ca()
    with pytest.raises(CAError, match="does not match"):
        import_ca(confdir, write_pem(tmp_path / "c.pem", root), write_pem(tmp_path / "k.pem", new_key()))
    assert {p.name: p.read_bytes() for p in confdir.iterdir()} == files
    assert validate_ca(confdir) == before


# ------------------------------------------------------------------------------------------- errors


def _key_mismatch(d: Path):
    root, _ = make_ca()
    return write_pem(d / "cert.pem", root), write_pem(d / "key.pem", new_key())


def _leaf(d: Path):
    root, root_key = make_ca()
    leaf, key = make_server_cert(root, root_key, [HOST])
    return write_pem(d / "cert.pem", leaf, root), write_pem(d / "key.pem", key)


def _defective(**defect):
    def make(d: Path):
        key = new_key()
        return write_pem(d / "cert.pem", build_ca_cert(key, **defect)), write_pem(d / "key.pem", key)
    return make


def _inter_defective(**defect):
    def make(d: Path):
        root, root_key = make_ca()
        key = new_key()
        inter = build_ca_cert(key, issuer=root, issuer_key=root_key, **defect)
        return write_pem(d / "cert.pem", inter, root), write_pem(d / "key.pem", key)
    return make


def _key_file(content: bytes):
    def make(d: Path):
        root, _ = make_ca()
        (d / "key.pem").write_bytes(content)
        return write_pem(d / "cert.pem", root), d / "key.pem"
    return make


def _encrypted(d: Path):
    root, key = make_ca()
    enc = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    return write_pem(d / "cert.pem", root), write_pem(d / "key.pem", enc)


def _two_keys(d: Path):
    root, key = make_ca()
    return write_pem(d / "cert.pem", root), write_pem(d / "key.pem", key, new_key())


def _no_cert(d: Path):
    _, key = make_ca()
    return write_pem(d / "cert.pem", key), write_pem(d / "key.pem", key)


def _der_cert(d: Path):
    root, key = make_ca()
    (d / "cert.pem").write_bytes(root.public_bytes(serialization.Encoding.DER))
    return d / "cert.pem", write_pem(d / "key.pem", key)


def _missing_cert(d: Path):
    _, key = make_ca()
    return d / "nope.pem", write_pem(d / "key.pem", key)


def _key_is_a_directory(d: Path):
    root, _ = make_ca()
    (d / "keydir").mkdir()
    return write_pem(d / "cert.pem", root), d / "keydir"


def _broken_chain(d: Path):
    root, root_key = make_ca("Real Root")
    inter, key = make_intermediate(root, root_key)
    unrelated, _ = make_ca("Unrelated Root")
    return write_pem(d / "cert.pem", inter, unrelated), write_pem(d / "key.pem", key)


def _expired_chain_cert(d: Path):
    root_key = new_key()
    root = build_ca_cert(root_key, cn="Old Root", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                         not_after=dt.datetime(2024, 6, 30, tzinfo=dt.UTC))
    inter, key = make_intermediate(root, root_key)
    return write_pem(d / "cert.pem", inter, root), write_pem(d / "key.pem", key)


def _small_rsa(d: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return write_pem(d / "cert.pem", build_ca_cert(key)), write_pem(d / "key.pem", key)


def _ed25519(d: Path):
    root, _ = make_ca()
    return write_pem(d / "cert.pem", root), write_pem(d / "key.pem", pem_ed25519())


def pem_ed25519() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


STRICT = r"Python 3\.13\+ clients \(strict X\.509 verification\) would reject every connection"

IMPORT_ERRORS = {
    "key mismatch": (_key_mismatch, r"^CA key in \S*key\.pem does not match the certificate in \S*cert\.pem"),
    "leaf cert": (_leaf, r"the first certificate in \S*cert\.pem is not a CA certificate "
                         r"\(BasicConstraints CA=false\); use the CA certificate, not a server certificate"),
    "no BasicConstraints": (_defective(bc=None), r"cert\.pem is not a CA certificate \(no BasicConstraints"),
    "BasicConstraints CA=false": (_defective(bc=False), r"cert\.pem is not a CA certificate \(BasicConst"),
    "no keyCertSign": (_defective(key_usage="no-certsign"), r"may not sign certificates \(KeyUsage without "
                                                            r"keyCertSign\)"),
    "expired": (_defective(not_before=dt.datetime(2023, 1, 1, tzinfo=dt.UTC),
                           not_after=dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)),
                r"^the CA certificate in \S*cert\.pem expired on 2025-01-01$"),
    "not yet valid": (_defective(not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=3)),
                      r"is not valid until .* UTC \(is the system clock right\?\)"),
    "BasicConstraints not critical": (_defective(bc_critical=False), rf"not marked critical: {STRICT}"),
    "no KeyUsage": (_defective(key_usage=None), rf"has no KeyUsage extension: {STRICT}"),
    "no SubjectKeyIdentifier": (_defective(ski=False), rf"has no SubjectKeyIdentifier extension: {STRICT}"),
    "intermediate without AKI": (
        _inter_defective(aki=False), rf"no AuthorityKeyIdentifier extension: {STRICT}"
    ),
    "no private key": (_key_file(b"hello\n"), r"^no private key found in \S*key\.pem"),
    "key file holds only a cert": (_key_file(pem(make_ca()[0])), r"^no private key found in \S*key\.pem"),
    "encrypted key": (_encrypted, r"the private key in \S*key\.pem is encrypted; .*openssl pkey"),
    "two keys": (_two_keys, r"key\.pem holds 2 private keys"),
    "no certificate": (_no_cert, r"^no certificate found in \S*cert\.pem"),
    "DER certificate": (
        _der_cert, r"no certificate found in \S*cert\.pem: it looks like DER; .*openssl x509"
    ),
    "missing file": (_missing_cert, r"^certificate file \S*nope\.pem does not exist$"),
    "unreadable key": (_key_is_a_directory, r"^key file \S*keydir is a directory"),
    "chain out of order": (_broken_chain, r"not a chain: #2 \(Unrelated Root\) did not issue #1"),
    "expired chain cert": (
        _expired_chain_cert, r"certificate #2 \(Old Root\) in \S*cert\.pem expired on 2024-06-30"
    ),
    "RSA 1024": (_small_rsa, r"has 1024 bits; at least 2048 are needed"),
    "Ed25519": (
        _ed25519, r"key\.pem is an unsupported key type \(Ed25519PrivateKey\); .* only sign with RSA or EC"
    ),
}


@pytest.mark.parametrize("case", IMPORT_ERRORS)
def test_import_errors(case: str, confdir: Path, tmp_path: Path) -> None:
    make, message = IMPORT_ERRORS[case]
    cert_file, key_file = make(tmp_path)
    with pytest.raises(CAError, match=message):
        import_ca(confdir, cert_file, key_file)
    assert not (confdir / "mitmproxy-ca.pem").exists()


@pytest.mark.parametrize(
    ("defect", "openssl_says"),
    [
        ({"bc_critical": False}, "Basic Constraints of CA cert not marked critical"),
        ({"key_usage": None}, "CA cert does not include key usage extension"),
        ({"ski": False}, "Missing Subject Key Identifier"),
    ],
)
def test_strict_refusals_match_what_python_clients_reject(
    defect: dict, openssl_says: str, confdir: Path
) -> None:
    """Each 'strict' refusal is real: mitmproxy loads such a CA happily, but a Python 3.13 client using
    the default strict flags rejects every leaf it issues."""
    key = new_key()
    cert = build_ca_cert(key, **defect)
    confdir.mkdir()
    write_pem(confdir / "mitmproxy-ca.pem", key, cert)
    with pytest.raises(ssl.SSLCertVerificationError, match=openssl_says):
        mitm_handshake(confdir, cert)
    with pytest.raises(CAError, match=STRICT):
        validate_ca(confdir)


# ------------------------------------------------------------------------------------------- validate


def test_validate_without_ca(confdir: Path) -> None:
    with pytest.raises(CAError, match=r"^no CA found: \S*mitmproxy-ca\.pem does not exist"):
        validate_ca(confdir)


def test_validate_cert_only_file(confdir: Path) -> None:
    confdir.mkdir()
    root, _ = make_ca()
    write_pem(confdir / "mitmproxy-ca.pem", root)  # mitmproxy would only log this and fail every handshake
    with pytest.raises(CAError, match=r"^no private key found in \S*mitmproxy-ca\.pem"):
        validate_ca(confdir)


def test_validate_mismatch_and_expiry_say_how_to_recover(confdir: Path) -> None:
    confdir.mkdir()
    root, _ = make_ca()
    write_pem(confdir / "mitmproxy-ca.pem", new_key(), root)
    with pytest.raises(CAError, match=r"CA key in the file does not match .*; import a new CA, or delete"):
        validate_ca(confdir)
    key = new_key()
    expired = build_ca_cert(
        key,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )
    write_pem(confdir / "mitmproxy-ca.pem", key, expired)
    with pytest.raises(CAError, match=r"expired on 2025-01-01; import a new CA, or delete .* to generate"):
        validate_ca(confdir)


def test_validate_garbage_and_unreadable(confdir: Path) -> None:
    confdir.mkdir()
    (confdir / "mitmproxy-ca.pem").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CAError, match=r"is not a PEM file"):
        validate_ca(confdir)
    (confdir / "mitmproxy-ca.pem").unlink()
    (confdir / "mitmproxy-ca.pem").mkdir()
    with pytest.raises(CAError, match=r"^CA file \S*mitmproxy-ca\.pem is a directory"):
        validate_ca(confdir)


def test_validate_encrypted_key_in_confdir(confdir: Path) -> None:
    confdir.mkdir()
    root, key = make_ca()
    enc = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"pw"),
    )
    write_pem(confdir / "mitmproxy-ca.pem", enc, root)
    with pytest.raises(CAError, match=r"is encrypted; mitmproxy needs it unencrypted"):
        validate_ca(confdir)
