"""`tillstream`: the operators' CLI (events, replay, projections, dead letters, outbox, sagas, watch).

It talks to the system `make run` recorded in its data folder (tillstream/locate.py), or to
the one `--database-url` / `--bootstrap` (or `DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS`) name,
and says which on standard error before it starts. Every command takes `--json` (same exit
codes as the text form); errors are one line on standard error and a non-zero exit (2: the
command was refused or the system not found; 1: it failed); commands that delete or abort
ask first, or need `--yes`. The work itself is in operations.py; this module only presents it,
with cli_base.py (what every command shares) and cli_interventions.py (dlq, outbox, saga).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Optional

import typer
from rich.table import Table

from tillstream import locate
from tillstream import operations as ops
from tillstream.cli_base import JSON, Refused, bootstrap, choose, console, dsn, emit, progress_bar, service_name
from tillstream.cli_interventions import dlq_app, outbox_app, saga_app

app = typer.Typer(help="Tillstream operators' toolkit.", no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False)
events_app = typer.Typer(help="Read the event streams.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models: rebuild and lag.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(projections_app, name="projections")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(saga_app, name="saga")


@app.callback()
def choose_system(database_url: Optional[str] = typer.Option(
                      None, "--database-url", metavar="URL", help="PostgreSQL of the system (default: DATABASE_URL,"
                      " else the one `make run` recorded in its data folder)."),
                  bootstrap_servers: Optional[str] = typer.Option(
                      None, "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default:"
                      " KAFKA_BOOTSTRAP_SERVERS, else the ones `make run` recorded).")) -> None:
    choose(database_url, bootstrap_servers)


# -- events -------------------------------------------------------------------------------
@events_app.command("read")
def events_read(order: str = typer.Option(..., "--order", help="Order number, e.g. R123456789"),
                as_json: bool = JSON) -> None:
    """The whole story of one order across all services, in causal order."""
    story = asyncio.run(ops.order_story(dsn(), order))
    if as_json:
        emit([ops.envelope_json(service, envelope) for service, envelope in story])
    if not story:
        print(f"tillstream: no events for order {order}", file=sys.stderr)
        raise typer.Exit(1)
    if as_json:
        return
    table = Table(title=f"order {order}: {len(story)} events")
    for column in ("occurred at", "service", "event", "seq", "event id", "caused by"):
        table.add_column(column)
    for service, e in story:
        table.add_row(e.occurred_at.strftime("%H:%M:%S.%f")[:-3], service, e.contract_name, str(e.sequence),
                      str(e.event_id)[:8], (e.causation_id or "")[:8])
    console.print(table)


@events_app.command("tail")
def events_tail(topic: str, from_beginning: bool = typer.Option(False, "--from-beginning"),
                limit: Optional[int] = typer.Option(None, "--limit", help="Stop after this many messages"),
                as_json: bool = JSON) -> None:
    """Follow a topic (e.g. order.events), printing each message as it arrives."""
    async def follow() -> None:
        async for partition, offset, key, value in ops.tail(bootstrap(), topic, from_beginning=from_beginning,
                                                            limit=limit):
            try:
                body = json.loads(value)
            except ValueError:
                body = value.decode(errors="replace")
            if as_json:
                print(json.dumps({"partition": partition, "offset": offset, "key": key and key.decode(),
                                  "value": body}), flush=True)
            else:
                kind = f"{body.get('type')}.v{body.get('version')}" if isinstance(body, dict) else "(not an event)"
                console.print(f"[{partition}:{offset}] {key.decode() if key else '-'}  {kind}")

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        pass


@events_app.command("catalog")
def events_catalog(as_json: bool = JSON) -> None:
    """Every event contract, by topic (docs/events/ has the schemas)."""
    from tillstream.catalog import contract_name, events_by_topic

    catalogue = {topic: [contract_name(c) for c in classes] for topic, classes in events_by_topic().items()}
    if as_json:
        emit(catalogue)
        return
    table = Table(title="event catalogue")
    table.add_column("topic")
    table.add_column("contract")
    for topic, names in catalogue.items():
        for name in names:
            table.add_row(topic, name)
    console.print(table)


# -- replay ---------------------------------------------------------------------------------
def _position_or_time(value: Optional[str]) -> tuple[Optional[int], Optional[datetime]]:
    if value is None:
        return None, None
    if value.isdigit():
        return int(value), None
    return None, datetime.fromisoformat(value)


@app.command("replay")
def replay(service: str = typer.Option(..., "--service", help="cart, order, shipping or payment"),
           from_position: int = typer.Option(0, "--from", help="Replay events after this global position"),
           since: Optional[datetime] = typer.Option(None, "--since", help="Replay events at or after this time"),
           until: Optional[str] = typer.Option(None, "--until", help="A position, or a time (exclusive)"),
           rate: Optional[float] = typer.Option(None, "--rate", help="At most this many events per second"),
           as_json: bool = JSON) -> None:
    """Publish a service's stored events again, each to the topic and under the key it was
    published with (so to its live partition). Consumers are idempotent, so state does not
    change and no external effect (a payment) fires again."""
    service_name(service)
    until_position, until_time = _position_or_time(until)
    with progress_bar(f"replaying {service}'s events") as bar:
        task = bar.add_task("replay", total=None)
        sent = asyncio.run(ops.replay(dsn(), bootstrap(), service, from_position=from_position,
                                      until_position=until_position, since=since, until=until_time, rate=rate,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total)))
    if as_json:
        emit({"service": service, "replayed": sent})
    else:
        console.print(f"replayed {sent} events of {service}")


# -- projections ----------------------------------------------------------------------------
@projections_app.command("rebuild")
def projections_rebuild(name: str = typer.Argument(..., help="The projection: order_view"),
                        as_json: bool = JSON) -> None:
    """Rebuild a read model from every stored event (folded in memory) and swap it in atomically."""
    if name != "order_view":
        raise Refused(f"unknown projection {name!r}; known: order_view")
    with progress_bar(f"rebuilding {name}") as bar:
        task = bar.add_task("rebuild", total=None)
        folded = asyncio.run(ops.rebuild_order_view(
            dsn(), progress=lambda done, total: bar.update(task, completed=done, total=total)))
    if as_json:
        emit({"projection": name, "events": folded})
    else:
        console.print(f"rebuilt {name} from {folded} events and swapped it in")


@projections_app.command("status")
def projections_status(as_json: bool = JSON,
                       ours_only: bool = typer.Option(False, "--ours", help="Only Tillstream's own groups")) -> None:
    """Lag of every consumer group on the broker (Tillstream's, on all their partitions, and
    subscribers', where they have committed): per partition, the committed offset, the end
    (measured: the embedded broker's own answer falls short after multi-record batches) and
    the lag."""
    lag = asyncio.run(ops.consumer_lag(bootstrap(), every_group=not ours_only))
    if as_json:
        emit(lag)
        return
    table = Table(title="consumer groups")
    for column in ("group", "topic", "partition", "committed", "end", "lag"):
        table.add_column(column, justify="left" if column in ("group", "topic") else "right")
    for group, status in lag.items():
        for row in status["detail"]:
            committed = "-" if row["committed"] is None else str(row["committed"])
            table.add_row(group, row["topic"], str(row["partition"]), committed, str(row["end"]), str(row["lag"]))
        table.add_row(f"[bold]{group}[/bold]", "", f"{status['partitions']} partitions", "", "",
                      f"[bold]{status['lag']}[/bold]", end_section=True)
    console.print(table)


# -- watch ------------------------------------------------------------------------------------
@app.command("watch")
def watch(interval: float = typer.Option(1.0, "--interval", min=0.2, help="Seconds between refreshes"),
          once: bool = typer.Option(False, "--once", help="Print one view (over one interval) and exit"),
          iterations: Optional[int] = typer.Option(None, "--iterations", min=1,
                                                   help="Exit after this many refreshes"),
          as_json: bool = typer.Option(False, "--json", help="Print each view as a line of JSON")) -> None:
    """A live view of throughput, consumer lag, sagas in progress, outbox backlog and dead
    letters, refreshed every --interval seconds until Ctrl-C."""
    from rich.live import Live

    from tillstream.watch import render
    from tillstream.watch import watch as watching

    iterations = 1 if once else iterations
    try:
        if as_json or once:
            show = (lambda view: print(json.dumps(view, default=str), flush=True)) if as_json else \
                (lambda view: console.print(render(view)))
            asyncio.run(watching(dsn(), bootstrap(), interval=interval, iterations=iterations, show=show))
            return
        with Live(console=console, auto_refresh=False, transient=False) as live:
            asyncio.run(watching(dsn(), bootstrap(), interval=interval, iterations=iterations,
                                 show=lambda view: live.update(render(view), refresh=True)))
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Errors are one line (TILLSTREAM_DEBUG=1 shows the traceback): 2 when the command was
    refused or no system was found, 1 when it failed."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as failure:  # noqa: BLE001 (an operator gets one line, not a traceback)
        if os.environ.get("TILLSTREAM_DEBUG"):
            raise
        first_line = str(failure).splitlines()[0] if str(failure) else ""
        # operations.py raises ValueError / LookupError for names and ids that name nothing.
        refused = isinstance(failure, (Refused, locate.SystemNotFound, ValueError, LookupError))
        if refused:
            print(f"tillstream: {first_line or type(failure).__name__}", file=sys.stderr)
        else:
            print(f"tillstream: {type(failure).__name__}: {first_line}", file=sys.stderr)
        sys.exit(2 if refused else 1)

if __name__ == "__main__":
    main()
