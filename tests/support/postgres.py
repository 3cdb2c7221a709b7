"""A throwaway PostgreSQL cluster for the test session: Debian's server binaries, `initdb` + `pg_ctl`.

The cluster lives in a temporary directory (data, unix socket, log), listens on a free 127.0.0.1 port, and runs
with fsync, full-page writes and synchronous commit off: nothing in it needs to survive a crash, and the tests
spend their time in the proxy, not in the disk. PostgreSQL refuses to run as root, so when the tests run as root
the server runs as an unprivileged system user (``aigw-test``, created with ``useradd`` if missing; another one
with ``AIGW_TEST_PG_USER``).

Roles: a superuser ``postgres`` for the harness, and the application's own role ``aigw``, an ordinary login role
with CREATEDB (what a production deployment gives the proxy, not a superuser) owning the database ``aigw``.
Both authenticate with passwords over TCP (SCRAM), as the proxy will.

Fixtures (tests/conftest.py imports them):

* ``postgres_cluster`` (session): the :class:`PostgresCluster`.
* ``postgres_url`` (session): ``postgresql://aigw:<password>@127.0.0.1:<port>/aigw``; for SQLAlchemy's async
  engine use :func:`sqlalchemy_url` (``postgresql+asyncpg://…``).
* ``fresh_postgres_url`` (function): a new empty database owned by ``aigw``, dropped after the test.
  :meth:`PostgresCluster.create_database` with ``template=`` clones a prepared database instead (``CREATE
  DATABASE … TEMPLATE``: a file copy, much faster than migrating again).

Binaries: ``AIGW_TEST_PG_BINDIR``, else the directory of ``pg_ctl`` on PATH, else the newest
``/usr/lib/postgresql/*/bin``; ``scripts/ensure-postgres.sh`` (run by ``make test``) installs them. Without them
the PostgreSQL tests skip, loudly; with CI=true they fail.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.ports import free_port

BINDIR_ENV = "AIGW_TEST_PG_BINDIR"
OS_USER_ENV = "AIGW_TEST_PG_USER"
DEFAULT_OS_USER = "aigw-test"
APP_ROLE = "aigw"
APP_DATABASE = "aigw"
SUPERUSER = "postgres"

# Appended to postgresql.conf. Durability off: a test cluster is thrown away, never recovered.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",  # two replicas' pools + the tests' own connections
    "max_locks_per_transaction": "256",  # partitioned tables lock every partition they touch
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",
}


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL here: the binaries are missing or the cluster could not be started."""


def find_bindir() -> Path | None:
    """The directory holding PostgreSQL's initdb, pg_ctl and postgres, or None."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # /usr/local/bin/pg_ctl may be a symlink into Debian's
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: _version_key(p.parent.name), reverse=True)
    for d in candidates:
        if all((d / exe).is_file() and os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)) or (0,)


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (SQLAlchemy's async engine with the asyncpg driver)."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return f"postgresql+asyncpg://{rest}"


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def run_sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop (a thread of its own)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _RunAs:
    """Who runs the server's processes: the current user, or (as root) an unprivileged system user."""

    name: str | None = None
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_this_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        name = os.environ.get(OS_USER_ENV) or DEFAULT_OS_USER
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            useradd = shutil.which("useradd")
            if useradd is None:
                raise PostgresUnavailable(
                    f"running as root, and there is no user {name!r} to run PostgreSQL as nor useradd to create one"
                ) from None
            proc = subprocess.run(
                [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", "--comment", "aigw-proxy test PostgreSQL", name],
                capture_output=True, text=True, timeout=30,
            )
            if proc.returncode != 0 and "already exists" not in proc.stderr:
                raise PostgresUnavailable(f"useradd {name} failed: {proc.stderr.strip()}") from None
            entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid)

    def chown(self, path: Path) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.gid if self.gid is not None else -1)

    def run(self, argv: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.uid is not None:
            extra = {"user": self.uid, "group": self.gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no stray PGHOST/PGPORT/…
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **extra)


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path  # data/, socket/, postgres.log, pwfile
    port: int
    version: str
    password: str  # the application role's
    superuser_password: str
    startup_seconds: float  # initdb + start + roles, wall clock
    run_as: _RunAs = field(repr=False, default_factory=_RunAs)
    _counter: Iterator[int] = field(repr=False, default_factory=lambda: itertools.count(1))
    _stopped: bool = field(repr=False, default=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url_for(self, database: str = APP_DATABASE) -> str:
        """``postgresql://aigw:<password>@127.0.0.1:<port>/<database>``: the application role."""
        return f"postgresql://{APP_ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(APP_DATABASE)

    def superuser_url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.superuser_password}@127.0.0.1:{self.port}/{database}"

    async def execute_async(self, sql: str, *args: object, database: str = "postgres",
                            superuser: bool = False) -> str:
        import asyncpg

        url = self.superuser_url(database) if superuser else self.url_for(database)
        conn = await asyncpg.connect(url, timeout=30)
        try:
            return await conn.execute(sql, *args)
        finally:
            await conn.close()

    def execute(self, sql: str, *args: object, database: str = "postgres", superuser: bool = False) -> str:
        """Run one statement (as ``aigw``, or the superuser) from sync code; returns the command status."""
        return run_sync(self.execute_async(sql, *args, database=database, superuser=superuser))

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """A new database owned by ``aigw`` (empty, or a copy of ``template``); returns its URL.

        A template must have no open connections while it is copied (PostgreSQL's rule): close every engine on
        it first. ``aigw`` owns the template it created, so it may copy it without being a superuser.
        """
        name = name or f"aigw_t{os.getpid()}_{next(self._counter)}"
        sql = f"CREATE DATABASE {_quote_ident(name)} OWNER {_quote_ident(APP_ROLE)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_ident(template)}"
        self.execute(sql)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever is still connected to it: as the superuser, because what is connected
        may be an autovacuum worker, which only a superuser (or pg_signal_backend) may terminate."""
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)", superuser=True)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run_as.run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60",
                             "stop"], cwd=self.root, timeout=90)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(bindir: Path | None = None, *, attempts: int = 5) -> PostgresCluster:
    """initdb + pg_ctl start + the application role and database. Raises :class:`PostgresUnavailable`."""
    t0 = time.monotonic()
    bindir = bindir or find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL's initdb/pg_ctl/postgres not found (looked at $AIGW_TEST_PG_BINDIR, pg_ctl on PATH and "
            "/usr/lib/postgresql/*/bin): `bash scripts/ensure-postgres.sh` installs Debian's postgresql package "
            "(root + apt-get)"
        )
    run_as = _RunAs.for_this_process()
    version = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="aigw-pg-"))
    try:
        (root / "socket").mkdir()
        su_password, app_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        pwfile = root / "pwfile"
        pwfile.write_text(su_password + "\n")
        for p in (root, root / "socket", pwfile):
            run_as.chown(p)
        proc = run_as.run(
            [str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, f"--pwfile={pwfile}",
             "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale",
             "--no-sync"],
            cwd=root, timeout=120,
        )
        pwfile.unlink()
        if proc.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        conf = root / "data" / "postgresql.conf"
        base_conf = conf.read_text() + "\n# aigw-proxy test cluster\n" + "".join(
            f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items()
        ) + f"unix_socket_directories = '{root / 'socket'}'\n"
        for _attempt in range(attempts):
            port = free_port()
            conf.write_text(base_conf + f"port = {port}\n")
            log = root / "postgres.log"
            proc = run_as.run([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(log), "-w", "-t", "60",
                               "start"], cwd=root, timeout=90)
            if proc.returncode == 0:
                break
            text = log.read_text(errors="replace") if log.exists() else ""
            if "could not bind" in text or "Address already in use" in text:
                continue  # the free port was taken meanwhile: another one
            raise PostgresUnavailable(f"pg_ctl start failed: {proc.stderr.strip()}\n{text[-2000:]}")
        else:
            raise PostgresUnavailable(f"pg_ctl start failed {attempts} times: no free port")
        cluster = PostgresCluster(bindir=bindir, root=root, port=port, version=version, password=app_password,
                                  superuser_password=su_password, startup_seconds=0.0, run_as=run_as)
        try:
            run_sync(_create_app_role(cluster))
        except BaseException:
            cluster.stop()
            raise
        cluster.startup_seconds = time.monotonic() - t0
        atexit.register(cluster.stop)  # in case the session ends without the fixture's teardown
        return cluster
    except BaseException:
        if not (root / "data" / "postmaster.pid").exists():
            shutil.rmtree(root, ignore_errors=True)
        raise


async def _create_app_role(cluster: PostgresCluster) -> None:
    import asyncpg

    conn = await asyncpg.connect(cluster.superuser_url(), timeout=30)
    try:
        # A password cannot be a bind parameter in CREATE ROLE; token_urlsafe() has no quote characters.
        await conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN CREATEDB PASSWORD '{cluster.password}'")
        await conn.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_ROLE}")
    finally:
        await conn.close()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _say(request: pytest.FixtureRequest, line: str, **markup: bool) -> None:
    """A line on the terminal now, past output capture (fixture set-up output is otherwise only shown on error)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(line, **markup)


def _unavailable(request: pytest.FixtureRequest, why: str) -> None:
    message = f"PostgreSQL tests cannot run: {why}"
    if in_ci():
        pytest.fail(message + " (CI=true: a missing PostgreSQL is a broken set-up, not a skip)", pytrace=False)
    _say(request, f"WARNING: {message}; skipping them", yellow=True, bold=True)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (started on first use, stopped and deleted at the end)."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        _unavailable(request, str(exc))
        raise AssertionError("unreachable") from exc
    if request.config.get_verbosity() >= 0:
        _say(request, f"{cluster.version}: test cluster on 127.0.0.1:{cluster.port}, "
                      f"started in {cluster.startup_seconds:.2f} s")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """``postgresql://aigw:<password>@127.0.0.1:<port>/aigw`` (the session's shared database)."""
    return postgres_cluster.url


@pytest.fixture
def fresh_postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A new, empty database for this test only (owned by ``aigw``), dropped afterwards."""
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(urlsplit(url).path.lstrip("/"))
