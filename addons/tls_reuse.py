"""TLS set-up that mitmproxy redoes on every new connection, done once and reused (the daemon's addons).

mitmproxy's TlsConfig stays in charge of every decision; these addons only keep what it computed or negotiated.

`LeafContexts` (the agent's side, registered before TlsConfig): for each new client connection TlsConfig works out
the leaf certificate's names (upstream certificate, SNI, server address), finds the leaf in its store, and loads
that certificate and private key into the new OpenSSL connection, which re-parses both every time. Here the leaf
TlsConfig picked is remembered per (upstream certificate, SNI, address), and each leaf gets one OpenSSL context,
made by mitmproxy's own `create_client_proxy_context` with TlsConfig's arguments, with the certificate and key
loaded once; a connection is made from it with TlsConfig's ALPN data. A connection that is not the plain case
(DTLS, ciphers set by an addon, upstream certificates added to the chain) is left to TlsConfig. One context per
leaf also keeps TLS 1.3 session tickets usable: a client that resumes its session (tests/e2e/test_tls_reuse.py)
resumes against the context that issued its ticket.

`UpstreamSessions` (the upstream side, registered after TlsConfig): mitmproxy never resumes a TLS session with an
upstream, so every new connection to a provider does a full handshake, certificate chain verification included.
Here the session a finished connection to the same (SNI, address, ALPN offer) under the same verification context
ended with is offered, once, to the next new one; the provider decides whether to resume. A resumed session was
verified for that same host name and trust when it was made, and OpenSSL does not offer it once the ticket's
lifetime is over. Each session is offered once (RFC 8446 C.4; a stand-in on Python's ssl accepted a ticket only
twice): sequential connections resume one after another, concurrent ones mostly do full handshakes.

Measured on a 2-core box (pyOpenSSL handshakes in memory with mitmproxy's contexts): the upstream side of a new
connection 0.71 ms of CPU, 0.40 ms resumed; the per-connection certificate and key load ~0.24 ms. With the leaf
look-up, `bench/proxy_bench.py --only newconn --reps 5` went from 14.2 to 12.5 ms of proxy CPU per new connection
(medians; 0.88x the code before in the same run, lower in each rep; runs on this shared box vary by +-2 ms).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mitmproxy import certs, connection, ctx, tls
from mitmproxy.addons import tlsconfig
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

_LEAVES_MAX = 1024  # (upstream certificate, SNI, address) -> leaf; mitmproxy's own store keeps 100 leaves
_SESSIONS_MAX = 256  # upstream (SNI, address, verification context) -> its last session
# The options TlsConfig builds a client-side context from; any change empties the caches.
_CLIENT_OPTIONS = ("tls_version_client_min", "tls_version_client_max", "tls_ecdh_curve_client", "ciphers_client",
                   "request_client_cert", "upstream_cert", "add_upstream_certs_to_client_chain", "confdir", "certs",
                   "key_size", "cert_passphrase")


class LeafContexts:
    def __init__(self) -> None:
        self._leaves: dict[tuple[Any, ...], certs.CertStoreEntry] = {}
        self._contexts: dict[int, tuple[certs.CertStoreEntry, SSL.Context]] = {}  # id(leaf) -> (leaf, context)
        self._store: object = None

    def configure(self, updated: set[str]) -> None:
        if updated & set(_CLIENT_OPTIONS):
            self._forget()

    def _forget(self) -> None:
        self._leaves.clear()
        self._contexts.clear()

    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        if tls_start.ssl_conn is not None or tls_start.is_dtls:
            return
        opts = ctx.options
        client = tls_start.conn
        assert isinstance(client, connection.Client)
        if client.cipher_list or opts.ciphers_client or opts.add_upstream_certs_to_client_chain:
            return  # per-connection settings: TlsConfig does it
        config = ctx.master.addons.get("tlsconfig")
        if config is None or config.certstore is None:
            return
        if config.certstore is not self._store:  # a new CA (or store): nothing made from the old one is reused
            self._forget()
            self._store = config.certstore
        context = tls_start.context
        server = context.server
        upstream = server.certificate_list[0] if opts.upstream_cert and server.certificate_list else None
        key = (upstream._cert if upstream is not None else None, client.sni,
               None if client.sni else client.sockname[0], server.address[0] if server.address else None)
        leaf = self._leaves.get(key)
        if leaf is None:
            if len(self._leaves) >= _LEAVES_MAX:
                self._forget()
            leaf = self._leaves[key] = config.get_cert(context)
        made = self._contexts.get(id(leaf))
        if made is None or made[0] is not leaf:
            made = self._contexts[id(leaf)] = (leaf, self._context_for(leaf, config))
        conn = SSL.Connection(made[1])
        # As TlsConfig: HTTP/1.1 towards a client that speaks TLS to the proxy itself (a secure web proxy).
        if len(context.layers) == 2 and isinstance(context.layers[0], modes.HttpProxy):
            client_alpn: bytes | None = b"http/1.1"
        else:
            client_alpn = client.alpn
        conn.set_app_data(tlsconfig.AppData(client_alpn=client_alpn, server_alpn=server.alpn, http2=opts.http2))
        conn.set_accept_state()
        tls_start.ssl_conn = conn

    @staticmethod
    def _context_for(leaf: certs.CertStoreEntry, config: tlsconfig.TlsConfig) -> SSL.Context:
        """TlsConfig's context for this leaf (its arguments, mitmproxy's function, not its shared cached copy),
        with the leaf's certificate and key loaded into it."""
        opts = ctx.options
        min_version = net_tls.Version[opts.tls_version_client_min]
        extra_chain = tuple(leaf.chain_certs) if leaf.chain_file is None and len(leaf.chain_certs) > 1 else ()
        ssl_ctx: SSL.Context = net_tls.create_client_proxy_context.__wrapped__(
            method=net_tls.Method.TLS_SERVER_METHOD,
            min_version=min_version,
            max_version=net_tls.Version[opts.tls_version_client_max],
            cipher_list=tuple(tlsconfig._default_ciphers(min_version)),
            ecdh_curve=net_tls.get_curve(opts.tls_ecdh_curve_client),
            chain_file=leaf.chain_file,
            request_client_cert=opts.request_client_cert,
            alpn_select_callback=tlsconfig.alpn_select_callback,
            extra_chain_certs=extra_chain,
            dhparams=config.certstore.dhparams,
        )
        ssl_ctx.use_certificate(leaf.cert.to_cryptography())
        ssl_ctx.use_privatekey(leaf.privatekey)
        return ssl_ctx


class UpstreamSessions:
    def __init__(self) -> None:
        self._sessions: OrderedDict[tuple[Any, ...], SSL.Session] = OrderedDict()
        self._live: dict[str, tuple[tuple[Any, ...], SSL.Connection]] = {}  # server connection id -> (key, TLS)

    @staticmethod
    def _key(server: connection.Server, ssl_conn: SSL.Connection) -> tuple[Any, ...]:
        # The verification context (trust, verify mode) is part of the key: the same object for the same options.
        return (server.sni, server.address, tuple(server.alpn_offers), ssl_conn.get_context())

    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        conn = tls_start.ssl_conn
        server = tls_start.conn
        if conn is None or tls_start.is_dtls or not isinstance(server, connection.Server):
            return
        session = self._sessions.pop(self._key(server, conn), None)  # each session is offered once (RFC 8446 C.4)
        if session is not None:
            conn.set_session(session)

    def tls_established_server(self, data: tls.TlsData) -> None:
        server = data.conn
        if data.ssl_conn is None or data.is_dtls or not isinstance(server, connection.Server):
            return
        self._live[server.id] = (self._key(server, data.ssl_conn), data.ssl_conn)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The TLS 1.3 tickets come after the handshake: the session is taken when the connection is over.
        live = self._live.pop(data.server.id, None)
        if live is None:
            return
        key, conn = live
        if data.server.error or not data.server.tls_established:
            self._sessions.pop(key, None)
            return
        session = conn.get_session()
        if session is None:
            return
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > _SESSIONS_MAX:
            self._sessions.popitem(last=False)
