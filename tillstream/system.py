"""Runs the whole system as separate processes: broker, PostgreSQL, four services, gateway.

`make run` uses it in the foreground; the test suite starts one on free ports. A service
process that dies is restarted with exponential backoff (logged); `stop()` ends the
services first, then the broker and the database.
"""
from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tillstream.stack import EmbeddedBroker, EmbeddedPostgres, stop_process, wait_for_port

log = logging.getLogger("tillstream.system")

SERVICE_NAMES = ("cart", "order", "shipping", "payment")
SAGA = "order-saga"  # the order service's faust worker (services/order/saga_worker.py)
PROCESS_NAMES = (*SERVICE_NAMES, SAGA, "gateway")


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start_at: float = 0.0

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else None
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class SystemConfig:
    data_dir: Path
    gateway_port: int = 8000
    service_ports: dict[str, int] = field(default_factory=lambda: {
        name: 8101 + i for i, name in enumerate((*SERVICE_NAMES, SAGA))})
    broker_port: int = 9092
    postgres_port: int = 5433
    database_url: str | None = None
    bootstrap_servers: str | None = None
    durable_postgres: bool = True
    postgres_settings: dict[str, str] = field(default_factory=dict)  # for the embedded server only
    log_dir: Path | None = None  # None: processes write to this terminal
    admin_key: str = ""
    id_secret: str = ""  # GetCandy ids' key (services/gateway/getcandy_ids.py)
    extra_env: dict[str, str] = field(default_factory=dict)


class System:
    def __init__(self, config: SystemConfig) -> None:
        self.config = config
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.processes: dict[str, ManagedProcess] = {}
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self.database_url = config.database_url
        self.bootstrap_servers = config.bootstrap_servers

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway_port}"

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.config.service_ports[name]}"

    @property
    def _pid_file(self) -> Path:
        return self.config.data_dir / "pids"

    def _stop_leftovers(self) -> None:
        """A previous run killed with -9 leaves its children running: stop them first."""
        if not self._pid_file.exists():
            return
        import psutil

        for pid in (int(p) for p in self._pid_file.read_text().split() if p.isdigit()):
            try:
                proc = psutil.Process(pid)
                cmdline = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if any(mark in cmdline for mark in ("tansu", "postgres", "services.")):
                print(f"[supervisor] stopping leftover process {pid} of an earlier run", flush=True)
                proc.terminate()
                try:
                    proc.wait(15)
                except psutil.TimeoutExpired:
                    proc.kill()
        self._pid_file.unlink()

    def _record_pids(self) -> None:
        pids = [p.proc.pid for p in (self.broker, self.postgres) if p is not None and p.proc is not None]
        pids += [p.pid for p in self.processes.values() if p.pid]
        self._pid_file.write_text("\n".join(map(str, pids)) + "\n")

    def start(self, ready_timeout: float = 90) -> "System":
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        if cfg.log_dir:
            cfg.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.bootstrap_servers:
            self.broker = EmbeddedBroker(cfg.broker_port, self._log_path("broker")).start()
            self.bootstrap_servers = self.broker.bootstrap_servers
        if not self.database_url:
            self.postgres = EmbeddedPostgres(cfg.data_dir / "postgres", cfg.postgres_port,
                                             durable=cfg.durable_postgres,
                                             settings=cfg.postgres_settings).start()
            self.database_url = self.postgres.dsn()
        env = {**os.environ, **cfg.extra_env, "DATABASE_URL": self.database_url,
               "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "TILLSTREAM_ADMIN_KEY": cfg.admin_key,
               "TILLSTREAM_ID_SECRET": cfg.id_secret,
               "PYTHONUNBUFFERED": "1",
               **{f"{n.upper()}_URL": self.service_url(n) for n in SERVICE_NAMES}}
        for name in PROCESS_NAMES:
            port = cfg.gateway_port if name == "gateway" else cfg.service_ports[name]
            if name == SAGA:
                argv = [sys.executable, "-m", "services.order.saga_worker"]
                process_env = {**env, "SAGA_PORT": str(port), "SAGA_DATA_DIR": str(cfg.data_dir / SAGA)}
            else:
                argv = [sys.executable, "-m", "uvicorn", f"services.{name}.app:app", "--host", "127.0.0.1",
                        "--port", str(port), "--no-access-log", "--log-level", "warning"]
                process_env = env
            self.processes[name] = ManagedProcess(name, argv, process_env, port, self._log_path(name))
            self.processes[name].start()
        self._record_pids()
        self.wait_ready(ready_timeout)
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()
        return self

    def _log_path(self, name: str) -> Path | None:
        return self.config.log_dir / f"{name}.log" if self.config.log_dir else None

    def wait_ready(self, timeout: float = 90, names: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for name in names or PROCESS_NAMES:
            process = self.processes[name]
            url = f"http://127.0.0.1:{process.port}/readyz"
            while True:
                if not process.alive() and self._monitor is None:
                    raise RuntimeError(f"{name} exited during start-up (code {process.proc.returncode});"
                                       f" see {process.log_path or 'the output above'}")
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s")
                time.sleep(0.1)

    def _watch(self) -> None:
        while not self._stopping.wait(0.25):
            for process in self.processes.values():
                if self._stopping.is_set() or process.alive():
                    continue
                now = time.monotonic()
                if process.next_start_at == 0.0:
                    uptime = now - process.started_at
                    if uptime > 60:
                        process.restarts = 0  # it had been healthy: start the backoff afresh
                    delay = min(0.5 * 2 ** process.restarts, 30.0)
                    process.next_start_at = now + delay
                    log.warning("%s exited with code %s after %.1fs; restarting in %.1fs",
                                process.name, process.proc.returncode, uptime, delay)
                    print(f"[supervisor] {process.name} (pid {process.pid}) exited with code "
                          f"{process.proc.returncode}; restarting in {delay:.1f}s", flush=True)
                elif now >= process.next_start_at:
                    process.restarts += 1
                    process.next_start_at = 0.0
                    process.start()
                    self._record_pids()
                    print(f"[supervisor] {process.name} restarted (pid {process.pid}, restart #{process.restarts})",
                          flush=True)

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor:
            self._monitor.join(5)
        for name in reversed(PROCESS_NAMES):
            if name in self.processes:
                stop_process(self.processes[name].proc, timeout=15)
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()
        self._pid_file.unlink(missing_ok=True)


def default_admin_key(data_dir: Path) -> str:
    """TILLSTREAM_ADMIN_KEY, or a key generated once and kept in the data folder."""
    return _kept_secret(data_dir, "TILLSTREAM_ADMIN_KEY", "admin_key")


def default_id_secret(data_dir: Path) -> str:
    """TILLSTREAM_ID_SECRET, or a secret generated once and kept in the data folder (GetCandy
    ids issued by one run must resolve in the next)."""
    return _kept_secret(data_dir, "TILLSTREAM_ID_SECRET", "id_secret")


def _kept_secret(data_dir: Path, variable: str, file_name: str) -> str:
    if os.environ.get(variable):
        return os.environ[variable]
    path = data_dir / file_name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(20))
        path.chmod(0o600)
    return path.read_text().strip()


__all__ = ["System", "SystemConfig", "default_admin_key", "default_id_secret", "wait_for_port"]
