"""Restarting and killing the processes of the system under test, in either topology (in
one process, the service's process is the whole system's)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx

from tillstream.stack import free_port, wait_for_port
from tillstream.system import SERVICE_NAMES

# A process exits within 3 x SHUTDOWN_TIMEOUT_MS (10 s) of SIGTERM (shared/shutdown.py).
EXIT_AFTER_SIGTERM_S = 40


async def _restarted_with(system, process, env: dict[str, str | None]) -> None:
    """`process` restarted with its environment changed (None: unset): SIGTERM, then back under
    the supervisor. One that has not exited in time is killed, so that it leaves the system to
    the next tests, and the test fails."""
    process.env = {k: v for k, v in {**process.env, **env}.items() if v is not None}
    process.restarts = 0
    old_pid = process.pid
    os.kill(old_pid, signal.SIGTERM)
    deadline = time.monotonic() + EXIT_AFTER_SIGTERM_S
    while process.pid == old_pid and process.alive():
        if time.monotonic() > deadline:
            os.kill(old_pid, signal.SIGKILL)
            await _restarted(system, process, old_pid)
            raise AssertionError(f"{process.name} (pid {old_pid}) had not exited {EXIT_AFTER_SIGTERM_S} s after"
                                 " SIGTERM; killed")
        await asyncio.sleep(0.1)
    await _restarted(system, process, old_pid)


async def _restarted(system, process, old_pid: int) -> None:
    deadline = time.monotonic() + 60
    while process.pid == old_pid or not process.alive():
        assert time.monotonic() < deadline, f"{process.name} was not restarted"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(system.wait_ready, 90, (process.name,))


async def reconfigure(system, service: str, **env: str | None) -> None:
    """Restart the process hosting `service` with its environment changed (None: unset)."""
    await _restarted_with(system, system.process_of(service), env)


async def reconfigure_every_instance(system, service: str, **env: str | None) -> None:
    """`reconfigure` for each process running `service` (the distributed topology may run several)."""
    if not system.distributed:
        return await reconfigure(system, service, **env)
    for name in [n for n in system.processes if n == service or n.startswith(f"{service}-")]:
        await _restarted_with(system, system.processes[name], env)


async def kill_9(system, service: str) -> int:
    """kill -9 the process hosting `service`; returns once the supervisor has it back."""
    process = system.process_of(service)
    old = process.pid
    os.kill(old, signal.SIGKILL)
    await _restarted(system, process, old)
    return old


def instances_of(system, service: str) -> list:
    """Every process running `service`: its instances apart, the one process otherwise."""
    if not system.distributed:
        return [system.process_of(service)]
    return [p for name, p in system.processes.items() if name == service or name.startswith(f"{service}-")]


async def kill_9_every_instance(system, *services: str) -> tuple[float, float]:
    """kill -9 every process running any of `services`, at once; returns when the supervisor
    has them all back and ready: (when the last was started again, when all were ready),
    monotonic."""
    victims = list({id(p): p for service in services for p in instances_of(system, service)}.values())
    old = {p.name: p.pid for p in victims}
    for process in victims:
        os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(p.pid == old[p.name] or not p.alive() for p in victims):
        assert time.monotonic() < deadline, f"{services} were not restarted"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(system.wait_ready, 90, tuple(old))
    return max(p.started_at for p in victims), time.monotonic()


async def request_surviving_a_crash(send) -> httpx.Response | None:
    """A request that a crash of the system may cut off (in one process, the gateway dies
    with the service it hosts): its response, or None if the connection went with it."""
    try:
        return await send()
    except httpx.TransportError:
        return None


def start_gateway(system, **env) -> tuple[subprocess.Popen, str, str]:
    """A gateway of its own, served as the system serves one: (process, public URL, internal URL)."""
    port, internal_port = free_port(), free_port()
    process_env = {**os.environ, **{f"{n.upper()}_URL": system.service_url(n) for n in SERVICE_NAMES},
                   "TILLSTREAM_GATEWAY_KEY": system.config.gateway_key,
                   "TILLSTREAM_INTERNAL_LISTEN": f"127.0.0.1:{internal_port}", **env}
    proc = subprocess.Popen([sys.executable, "-m", "shared.http_server", "services.gateway.app:create_app",
                             "--port", str(port), "--log-level", "warning"], env=process_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, 30, proc)
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal_port}"
