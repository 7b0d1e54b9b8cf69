"""What every command of the `tillstream` CLI shares (tillstream/cli.py): the system it talks
to, found once and announced on standard error, the checks of names and of destructive
commands, and how answers are printed."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tillstream import locate
from tillstream import operations as ops

console = Console()
JSON = typer.Option(False, "--json", help="Print JSON instead of tables.")
YES = typer.Option(False, "--yes", "-y", help="Do it without asking.")


class Refused(Exception):
    """The command was not carried out (exit 2): a bad name, or a destructive one not confirmed."""


_chosen: dict[str, Optional[str]] = {"database_url": None, "bootstrap": None}


def choose(database_url: Optional[str], bootstrap_servers: Optional[str]) -> None:
    """The system named on the command line (`tillstream --database-url ... --bootstrap ...`)."""
    _chosen.update(database_url=database_url, bootstrap=bootstrap_servers)
_located: list[locate.SystemAddress] = []


def system() -> locate.SystemAddress:
    """The system this command talks to, found once and announced on standard error."""
    if not _located:
        _located.append(locate.locate(_chosen["database_url"], _chosen["bootstrap"]))
        print(f"tillstream: {_located[0].describe()}", file=sys.stderr, flush=True)
    return _located[0]


def dsn() -> str:
    return system().database_url


def bootstrap() -> str:
    return system().bootstrap_servers


def service_name(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in ops.SERVICES:
        raise Refused(f"unknown service {value!r}: one of {', '.join(ops.SERVICES)}")
    return value


def confirm(question: str, yes: bool) -> None:
    """Destructive commands: `--yes`, or a person who answers y at a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Refused(f"{question} Pass --yes to confirm.")
    if not typer.confirm(question, default=False, err=True):
        raise Refused("not confirmed; nothing was done")


def emit(value) -> None:
    print(json.dumps(value, default=str, indent=2))


def progress_bar(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True))
