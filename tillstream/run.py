"""`make run`: the whole system in the foreground, gateway on http://127.0.0.1:8000.

Ctrl-C or SIGTERM stops everything cleanly; running it again starts from the same data.
Started as root, it drops to an unprivileged user (`TILLSTREAM_RUN_AS`, default `tillstream`)
before starting anything. It refuses unsafe settings (shared/safety.py) before anything runs;
`make run` sets `TILLSTREAM_DEVELOPMENT=true`, which lets it use the test payment gateway.
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
from pathlib import Path

from shared import safety
from shared.contracts import SERVICES
from shared.settings import load_settings
from tillstream import locate
from tillstream.system import (
    System,
    SystemConfig,
    default_admin_key,
    default_gateway_key,
    default_id_secret,
    default_operator_key,
    secrets_dir,
)

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    data_dir = locate.data_dir()
    check_settings()
    drop_root(data_dir)
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
        gateway_key=default_gateway_key(data_dir),
        operator_key=default_operator_key(data_dir),
        internal_listen=os.environ.get("TILLSTREAM_INTERNAL_LISTEN", "127.0.0.1:8001"),
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
        f"  internal listener     {system.internal_url}   (/readyz, /metrics, the bus; never public)",
        f"  Kafka bootstrap       {system.bootstrap_servers}" + ("  (embedded tansu)" if system.broker else ""),
        f"  PostgreSQL            {without_password(system.database_url)}" + (
            f"  (embedded, data in {cfg.data_dir / 'postgres'})" if system.postgres else ""),
        f"  admin API key         {key_location(cfg.data_dir)}   (Authorization: Bearer <key>)",
        *demo_summary,
        f"  operators' CLI        .venv/bin/tillstream --help"
        f"   (finds this system through {locate.record_path(cfg.data_dir)})",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), flush=True)


def check_settings() -> None:
    """Refuse unsafe settings before anything starts (the processes check again)."""
    if load_settings().development:
        os.environ.setdefault("TILLSTREAM_PAYMENT_GATEWAY", "test")
    settings = load_settings()
    safety.check_process(settings)
    safety.check_payment_gateway(settings)


def key_location(data_dir: Path) -> str:
    """Where the admin key is, never the key (a terminal's scrollback and CI logs keep it)."""
    if os.environ.get("TILLSTREAM_ADMIN_KEY"):
        return "from TILLSTREAM_ADMIN_KEY"
    return f"in {secrets_dir(data_dir) / 'admin_key'}"


def without_password(url: str | None) -> str:
    return locate.without_password(url or "")


# What `make run` keeps in its data folder (tillstream/system.py, stack.py, keys.py, locate.py).
DATA_ENTRIES = ("postgres", "secrets", "pids", "logs", locate.RECORD_NAME)


def drop_root(data_dir: Path) -> None:
    """Started as root: become `TILLSTREAM_RUN_AS` (created as a system user if missing) for
    good, owning the data folder. Nothing else is loosened: a folder on the way to the data
    folder, the checkout or the Python installation that user cannot enter is a refusal naming
    it. `TILLSTREAM_RUN_AS=root` stays root, said so in the output (not recommended).

    With no TILLSTREAM_RUN_AS given, a machine where the default user cannot reach the Python
    installation (a Python under root's 0700 home, as pyenv installs it for root) keeps `make
    run` working: it stays root, with a warning naming the folder and the way out, rather than
    refusing the README's first command. A user named in TILLSTREAM_RUN_AS is never given up on."""
    if os.geteuid() != 0:
        return
    named = os.environ.get("TILLSTREAM_RUN_AS")
    name = named or "tillstream"
    if name == "root":
        print("[tillstream] WARNING: running as root (TILLSTREAM_RUN_AS=root)", flush=True)
        return
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
    user = pwd.getpwnam(name)
    interpreter = Path(os.path.realpath(sys.executable)).parent
    for needed in (data_dir.parent, ROOT, Path(sys.base_prefix), interpreter):
        for folder in [*reversed(needed.parents), needed]:
            info = folder.stat()
            bits = 0o100 if info.st_uid == user.pw_uid else 0o001
            if info.st_mode & bits:
                continue
            if named is None and needed in (Path(sys.base_prefix), interpreter):
                print(f"[tillstream] WARNING: running as root: user {name} cannot enter {folder}, where this"
                      f" Python lives ({needed}); install Python where {name} can read it, or set"
                      " TILLSTREAM_RUN_AS (root: stay root without this warning)", flush=True)
                return
            raise SystemExit(f"tillstream: refusing to start: user {name} cannot enter {folder} (needed for"
                             f" {needed}); run as a user who can, or name one in TILLSTREAM_RUN_AS"
                             " (root: stay root)")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Only what Tillstream keeps there changes hands: a data folder named by mistake (a home,
    # /srv) does not give its other files to the user.
    for entry in (data_dir, *(data_dir / name for name in DATA_ENTRIES)):
        if entry.exists() or entry.is_symlink():
            for path in [entry, *(entry.rglob("*") if entry.is_dir() and not entry.is_symlink() else ())]:
                os.lchown(path, user.pw_uid, user.pw_gid)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = str(data_dir)
    print(f"[tillstream] started as root: running as {name} (uid {user.pw_uid})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
