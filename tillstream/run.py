"""`make run`: the whole system in the foreground, gateway on http://127.0.0.1:8000.

Ctrl-C or SIGTERM stops everything cleanly; running it again starts from the same data.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from shared.contracts import SERVICES
from tillstream import locate
from tillstream.system import System, SystemConfig, default_admin_key, default_id_secret, default_service_key

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    data_dir = Path(os.environ.get("TILLSTREAM_DATA_DIR", ROOT / ".data"))
    config = SystemConfig(
        data_dir=data_dir,
        gateway_port=int(os.environ.get("GATEWAY_PORT", 8000)),
        postgres_port=int(os.environ.get("TILLSTREAM_POSTGRES_PORT", 5433)),
        broker_port=int(os.environ.get("TILLSTREAM_BROKER_PORT", 9092)),
        database_url=os.environ.get("DATABASE_URL") or None,
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        topology=os.environ.get("TILLSTREAM_TOPOLOGY", "one-process"),
        instances=int(os.environ.get("TILLSTREAM_INSTANCES", "1")),
        admin_key=default_admin_key(data_dir),
        id_secret=default_id_secret(data_dir),
        service_key=default_service_key(data_dir),
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    system = System(config)
    print("[tillstream] starting the broker, PostgreSQL and the services...", flush=True)
    try:
        system.start()
        from tillstream.demo import load_demo_data

        summary = load_demo_data(system)
        locate.record(data_dir, database_url=system.database_url, bootstrap_servers=system.bootstrap_servers,
                      gateway_url=system.gateway_url)
        print_banner(system, summary)
        stop.wait()
        print("\n[tillstream] stopping...", flush=True)
    finally:
        locate.forget(data_dir)
        system.stop()
        print("[tillstream] stopped.", flush=True)
    return 0


def print_banner(system: System, demo_summary: list[str]) -> None:
    cfg = system.config
    lines = [
        "",
        "Tillstream is running.",
        f"  gateway (public API)  {system.gateway_url}   e.g. curl -X POST {system.gateway_url}/api/orders",
        f"  topology              {cfg.topology}" + (": gateway, services, consumers and saga in one process"
                                                   if not system.distributed else f", {cfg.instances} of each service"),
        *(f"  {name:<21} {system.service_url(name)}" for name in SERVICES if system.distributed),
        f"  Kafka bootstrap       {system.bootstrap_servers}" + ("  (embedded tansu)" if system.broker else ""),
        f"  PostgreSQL            {system.database_url}" + ("  (embedded, data in "
                                                           f"{cfg.data_dir / 'postgres'})" if system.postgres else ""),
        f"  admin API key         {cfg.admin_key}   (Authorization: Bearer <key>)",
        *demo_summary,
        f"  operators' CLI        .venv/bin/tillstream --help"
        f"   (finds this system through {locate.record_path(cfg.data_dir)})",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
