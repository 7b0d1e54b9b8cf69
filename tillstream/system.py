"""Runs the whole system: the broker, PostgreSQL, and Tillstream in one of two topologies.

"one-process" (the default, `make run`): one process hosts the gateway and the four
services (tillstream/host.py). "distributed": each service its own process (`instances`
of each) and the gateway apart, calling them over HTTP, as docker-compose runs them. The
test suite starts either on free ports. A process that dies is restarted with exponential
backoff (logged); `stop()` ends Tillstream's processes first, then the broker and the database.

The gateway's (or the one process's) `/readyz`, `/metrics` and bus answer on its internal
listener (`internal_url`, shared/internal.py), never on `gateway_url`.
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

from shared.contracts import SERVICES
from tillstream.keys import kept_secret, secrets_dir
from tillstream.stack import EmbeddedBroker, EmbeddedPostgres, free_port, stop_process, wait_for_port

log = logging.getLogger("tillstream.system")

SERVICE_NAMES = SERVICES
HOST = "tillstream"  # the one process of the default topology (tillstream/host.py)
TOPOLOGIES = ("one-process", "distributed")


# How many published messages the embedded broker may come to hold before a one-process
# system empties its topics (measured: docs/performance.md, "Soak").
BROKER_RECYCLE_AFTER_MESSAGES = 10_000


# The embedded broker holds a group's rebalance until its members rejoin or their sessions
# expire: after kill -9 that is the whole timeout, during which the group consumes nothing.
# Real Kafka refuses sessions under its group.min.session.timeout.ms (6 s by default), so
# only a system on the embedded broker shortens them (static membership would spare the
# wait, but tansu keeps resetting static members: measured, README "Settings").
EMBEDDED_BROKER_GROUP_TIMEOUTS = {"KAFKA_SESSION_TIMEOUT_MS": "3000", "KAFKA_REBALANCE_TIMEOUT_MS": "3000"}


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    internal_url: str  # where its /readyz answers
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
    # "one-process" (the default): gateway, services, consumers and saga in one process.
    # "distributed": each service its own process, `instances` of each, the gateway apart.
    topology: str = "one-process"
    instances: int = 1
    service_ports: dict[str, list[int]] | None = None  # distributed: each instance's port
    broker_port: int = 9092
    postgres_port: int = 5433
    database_url: str | None = None
    bootstrap_servers: str | None = None
    durable_postgres: bool = True
    postgres_settings: dict[str, str] = field(default_factory=dict)  # for the embedded server only
    log_dir: Path | None = None  # None: processes write to this terminal
    admin_key: str = ""
    id_secret: str = ""   # GetCandy ids' key (services/gateway/getcandy/ids.py)
    # The callers' credentials for services' operations over HTTP (shared/service_access.py):
    # the gateway's (its calls) and the operator's (reference-data loaders, System.call).
    gateway_key: str = ""
    order_key: str = ""  # the order service's calls to its participants; generated at start if empty
    operator_key: str = ""
    # The internal listener of the gateway (or the one process), host:port; None: a free port.
    internal_listen: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def ports(self) -> dict[str, list[int]]:
        if self.service_ports is not None:
            return self.service_ports
        return {name: [8101 + i * self.instances + k for k in range(self.instances)]
                for i, name in enumerate(SERVICE_NAMES)}


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
        self.internal_listen = config.internal_listen or f"127.0.0.1:{free_port()}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway_port}"

    @property
    def internal_url(self) -> str:
        """The gateway's (or the one process's) internal listener: /readyz, /metrics, the bus."""
        host, _, port = self.internal_listen.rpartition(":")
        host = host.strip("[]")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{port}"

    @property
    def distributed(self) -> bool:
        return self.config.topology == "distributed"

    def service_url(self, name: str) -> str:
        """Where a service answers its operations at `/bus/<operation>` (its first instance,
        when distributed; in one process, the host answers for each service)."""
        if not self.distributed:
            return f"{self.internal_url}/services/{name}"
        return f"http://127.0.0.1:{self.config.ports()[name][0]}"

    def process_of(self, service: str) -> ManagedProcess:
        """The process hosting `service` (its first instance): in one process, that one."""
        return self.processes[service if self.distributed else HOST]

    def _operation_url(self, service: str, operation: str) -> str:
        return f"{self.service_url(service)}/bus/{operation}"

    def key_of(self, caller: str) -> str:
        return {"gateway": self.config.gateway_key, "operator": self.config.operator_key,
                "order": self.config.order_key}[caller]

    def call(self, service: str, operation: str, *, as_caller: str = "operator", **arguments):
        """A service's operation over HTTP, with the operator's key (reference data) unless
        told otherwise."""
        response = httpx.post(self._operation_url(service, operation), json=arguments, timeout=60,
                              headers={"X-Service-Key": self.key_of(as_caller)})
        response.raise_for_status()
        return response.json()

    async def acall(self, service: str, operation: str, *, as_caller: str = "operator", **arguments):
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(self._operation_url(service, operation), json=arguments,
                                         headers={"X-Service-Key": self.key_of(as_caller)})
        response.raise_for_status()
        return response.json()

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
            if any(mark in cmdline for mark in ("tansu", "postgres", "services.", "tillstream.host")):
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
        """Start everything and wait until it answers; if any part fails to start, what
        did start is stopped again (nothing is left running for the caller to find)."""
        try:
            self._start(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()
        return self

    def _start(self, ready_timeout: float) -> None:
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
        # Each process holds the keys it needs: the services and the one process check every
        # caller's key (and the order service calls with its own); the gateway alone holds only its own.
        env = {**os.environ, **cfg.extra_env, "DATABASE_URL": self.database_url,
               "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "TILLSTREAM_ADMIN_KEY": cfg.admin_key,
               "TILLSTREAM_ID_SECRET": cfg.id_secret, "TILLSTREAM_GATEWAY_KEY": cfg.gateway_key,
               "TILLSTREAM_OPERATOR_KEY": cfg.operator_key,
               # Only this system's processes share it: generated unless given.
               "TILLSTREAM_ORDER_KEY": cfg.order_key or os.environ.get("TILLSTREAM_ORDER_KEY") or secrets.token_hex(32),
               "TILLSTREAM_INTERNAL_LISTEN": self.internal_listen,
               "PYTHONUNBUFFERED": "1"}
        if self.broker is not None:
            env = {**EMBEDDED_BROKER_GROUP_TIMEOUTS, **env}
        if self.broker is not None and not self.distributed:
            # The broker is ours alone and every relay and consumer is in the one process:
            # it may empty the topics it has handled (shared/recycle.py).
            env.setdefault("BROKER_RECYCLE_AFTER_MESSAGES", str(BROKER_RECYCLE_AFTER_MESSAGES))
        if self.distributed:
            ports = cfg.ports()
            # The services call each other (the order service its participants); the gateway
            # holds neither their key nor the operator's.
            urls = {f"{n.upper()}_URL": ",".join(f"http://127.0.0.1:{p}" for p in ports[n]) for n in SERVICE_NAMES}
            for name in SERVICE_NAMES:
                for k, port in enumerate(ports[name]):
                    self._add(name if k == 0 else f"{name}-{k + 1}", f"services.{name}.app:create_app", port,
                              {**env, **urls}, f"http://127.0.0.1:{port}")
            self._add("gateway", "services.gateway.app:create_app", cfg.gateway_port,
                      {**env, **urls, "TILLSTREAM_OPERATOR_KEY": "", "TILLSTREAM_ORDER_KEY": ""}, self.internal_url)
        else:
            self._add(HOST, "tillstream.host:create_app", cfg.gateway_port, env, self.internal_url)
        self._record_pids()
        self.wait_ready(ready_timeout)

    def _add(self, name: str, factory: str, port: int, env: dict[str, str], internal_url: str) -> None:
        argv = [sys.executable, "-m", "shared.http_server", factory, "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--log-level", "warning"]
        self.processes[name] = ManagedProcess(name, argv, env, port, internal_url, self._log_path(name))
        self.processes[name].start()

    def _log_path(self, name: str) -> Path | None:
        return self.config.log_dir / f"{name}.log" if self.config.log_dir else None

    def wait_ready(self, timeout: float = 90, names: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.processes):
            process = self.processes[name]
            url = f"{process.internal_url}/readyz"
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
        for process in reversed(list(self.processes.values())):
            stop_process(process.proc, timeout=15)
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()
        self._pid_file.unlink(missing_ok=True)


def default_gateway_key(data_dir: Path) -> str:
    """TILLSTREAM_GATEWAY_KEY, or a key generated once and kept in the data folder."""
    return kept_secret(data_dir, "TILLSTREAM_GATEWAY_KEY", "gateway_key")


def default_operator_key(data_dir: Path) -> str:
    """TILLSTREAM_OPERATOR_KEY, or a key generated once and kept in the data folder."""
    return kept_secret(data_dir, "TILLSTREAM_OPERATOR_KEY", "operator_key")


def default_admin_key(data_dir: Path) -> str:
    """TILLSTREAM_ADMIN_KEY, or a key generated once and kept in the data folder."""
    return kept_secret(data_dir, "TILLSTREAM_ADMIN_KEY", "admin_key")


def default_id_secret(data_dir: Path) -> str:
    """TILLSTREAM_ID_SECRET, or a secret generated once and kept in the data folder (GetCandy
    ids issued by one run must resolve in the next)."""
    return kept_secret(data_dir, "TILLSTREAM_ID_SECRET", "id_secret")


__all__ = ["HOST", "System", "SystemConfig", "default_admin_key", "default_gateway_key", "default_id_secret",
           "default_operator_key", "secrets_dir", "wait_for_port"]
