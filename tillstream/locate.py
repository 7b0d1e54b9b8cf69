"""Where the running system listens, so the operators' CLI talks to the system it belongs to.

`make run` records its database, broker and gateway in `<data folder>/system.json` once they
are up (0600: a database URL may carry a password) and removes the record when it stops. The
CLI takes, in this order: its `--database-url` / `--bootstrap` options, `DATABASE_URL` /
`KAFKA_BOOTSTRAP_SERVERS`, then that record. With none of them it refuses, rather than guess at
default ports where another stack may be listening.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RECORD_NAME = "system.json"


class SystemNotFound(Exception):
    pass


@dataclass(frozen=True)
class SystemAddress:
    database_url: str
    bootstrap_servers: str
    gateway_url: str | None
    source: str  # where the addresses came from, said to the operator

    def describe(self) -> str:
        gateway = f", gateway {self.gateway_url}" if self.gateway_url else ""
        return (f"database {without_password(self.database_url)}, broker {self.bootstrap_servers}{gateway}"
                f" ({self.source})")


def data_dir() -> Path:
    """`make run`'s data folder, found as tillstream/run.py finds it."""
    return Path(os.environ.get("TILLSTREAM_DATA_DIR") or ROOT / ".data").resolve()


def record_path(folder: Path | None = None) -> Path:
    return (folder or data_dir()) / RECORD_NAME


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def record(folder: Path, *, database_url: str, bootstrap_servers: str, gateway_url: str) -> Path:
    """Write where this system listens, readable by its owner only, replacing any older record."""
    path = record_path(folder)
    temporary = path.with_name(f".{RECORD_NAME}.{os.getpid()}")
    body = {"database_url": database_url, "bootstrap_servers": bootstrap_servers, "gateway_url": gateway_url,
            "pid": os.getpid(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(body, out)
    os.replace(temporary, path)
    return path


def forget(folder: Path) -> None:
    """The system stopped: nothing should be found at its addresses any more."""
    path = record_path(folder)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locate(database_url: str | None = None, bootstrap_servers: str | None = None) -> SystemAddress:
    """The system the CLI should talk to (see the module's docstring for the order)."""
    database_url = database_url or os.environ.get("DATABASE_URL") or None
    bootstrap_servers = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    path = record_path()
    recorded: dict = {}
    if not (database_url and bootstrap_servers):
        try:
            recorded = json.loads(path.read_text())
        except FileNotFoundError:
            raise SystemNotFound(f"no running system recorded in {path}: start one with `make run`, or give"
                                 " --database-url and --bootstrap (or DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS)"
                                 ) from None
        except (OSError, ValueError) as exc:
            raise SystemNotFound(f"cannot read {path}: {exc}") from None
        if not _alive(recorded.get("pid")):
            raise SystemNotFound(f"{path} records a system (pid {recorded.get('pid')}) that is no longer running:"
                                 " start it with `make run`")
    source = ("options/environment" if database_url and bootstrap_servers
              else f"options/environment and {path}" if database_url or bootstrap_servers
              else f"recorded by make run in {path}")
    return SystemAddress(database_url=database_url or recorded["database_url"],
                         bootstrap_servers=bootstrap_servers or recorded["bootstrap_servers"],
                         gateway_url=recorded.get("gateway_url"), source=source)
