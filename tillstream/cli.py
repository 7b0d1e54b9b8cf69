"""`tillstream`: the operators' CLI (events, replay, projections, dead letters, outbox, sagas, watch).

It talks to the system `make run` recorded in its data folder (tillstream/locate.py), or to
the one `--database-url` / `--bootstrap` (or `DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS`) name,
and says which on standard error before it starts. Every command takes `--json` (same exit
codes as the text form); errors are one line on standard error and a non-zero exit (2: the
command was refused or the system not found; 1: it failed); commands that delete or abort
ask first, or need `--yes`. The work itself is in operations.py; this module only presents it.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tillstream import interventions, locate
from tillstream import operations as ops

app = typer.Typer(help="Tillstream operators' toolkit.", no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False)
events_app = typer.Typer(help="Read the event streams.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models: rebuild and lag.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered messages.", no_args_is_help=True)
outbox_app = typer.Typer(help="The transactional outboxes.", no_args_is_help=True)
saga_app = typer.Typer(help="Completions in progress (the order saga).", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(projections_app, name="projections")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(saga_app, name="saga")
console = Console()
JSON = typer.Option(False, "--json", help="Print JSON instead of tables.")
YES = typer.Option(False, "--yes", "-y", help="Do it without asking.")


class Refused(Exception):
    """The command was not carried out (exit 2): a bad name, or a destructive one not confirmed."""


_chosen: dict[str, Optional[str]] = {"database_url": None, "bootstrap": None}
_located: list[locate.SystemAddress] = []


@app.callback()
def choose_system(database_url: Optional[str] = typer.Option(
                      None, "--database-url", metavar="URL", help="PostgreSQL of the system (default: DATABASE_URL,"
                      " else the one `make run` recorded in its data folder)."),
                  bootstrap_servers: Optional[str] = typer.Option(
                      None, "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default:"
                      " KAFKA_BOOTSTRAP_SERVERS, else the ones `make run` recorded).")) -> None:
    _chosen.update(database_url=database_url, bootstrap=bootstrap_servers)


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


# -- dead letters ---------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(service: Optional[str] = typer.Option(None, "--service"), as_json: bool = JSON) -> None:
    """Dead-lettered messages (durable copies; the <topic>.dlq topics hold them too)."""
    letters = asyncio.run(ops.dead_letters(dsn(), service_name(service)))
    if as_json:
        emit([{k: v for k, v in vars(d).items() if k not in ("value", "headers")} for d in letters])
        return
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("service", "id", "consumer", "topic", "partition:offset", "failed at", "replayed", "error"):
        table.add_column(column)
    for d in letters:
        table.add_row(d.service, str(d.id), d.consumer, d.topic, f"{d.partition}:{d.offset}",
                      d.failed_at.strftime("%Y-%m-%d %H:%M:%S"), "yes" if d.replayed_at else "",
                      d.error[:80])
    console.print(table)


@dlq_app.command("inspect")
def dlq_inspect(letter_id: int, service: str = typer.Option(..., "--service"), as_json: bool = JSON) -> None:
    letter = next((d for d in asyncio.run(ops.dead_letters(dsn(), service_name(service), with_value=True))
                   if d.id == letter_id), None)
    if letter is None:
        print(f"tillstream: no dead letter {letter_id} in {service}", file=sys.stderr)
        raise typer.Exit(1)
    body = {**vars(letter), "value": letter.value.decode(errors="replace")}
    if as_json:
        emit(body)
    else:
        for key, value in body.items():
            console.print(f"[bold]{key}[/bold]: {value}")


@dlq_app.command("replay")
def dlq_replay(letter_id: int, service: str = typer.Option(..., "--service"), as_json: bool = JSON) -> None:
    """Publish a dead-lettered message to its original topic again (after fixing its cause)."""
    letter = asyncio.run(ops.replay_dead_letter(dsn(), service_name(service), letter_id))
    if as_json:
        emit({"service": service, "id": letter.id, "topic": letter.topic, "replayed_at": letter.replayed_at})
    else:
        console.print(f"dead letter {letter_id} published again to {letter.topic}")


@dlq_app.command("purge")
def dlq_purge(service: str = typer.Option(..., "--service"), letter_id: Optional[int] = typer.Option(None, "--id"),
              replayed: bool = typer.Option(False, "--replayed", help="Only the ones already replayed"),
              yes: bool = YES, as_json: bool = JSON) -> None:
    """Delete dead letters for good (their copies on <topic>.dlq stay)."""
    service_name(service)
    which = (f"dead letter {letter_id}" if letter_id is not None else
             "every replayed dead letter" if replayed else "EVERY dead letter")
    system()
    confirm(f"Delete {which} of {service}?", yes)
    removed = asyncio.run(ops.purge_dead_letters(dsn(), service, letter_id=letter_id, replayed_only=replayed))
    if as_json:
        emit({"service": service, "purged": removed})
    else:
        console.print(f"purged {removed} dead letters from {service}")


# -- outbox ---------------------------------------------------------------------------------
@outbox_app.command("status")
def outbox_status(as_json: bool = JSON) -> None:
    """What each service has not yet published, how old the oldest row is, and the rows the
    broker refused for good (parked, with the error), each holding back the later rows of
    its key (held) until `outbox retry` or `outbox discard` ends it."""
    status = asyncio.run(ops.outboxes(dsn()))
    if as_json:
        emit(status)
        return
    table = Table(title="outboxes")
    for column in ("service", "unpublished", "oldest (s)", "parked", "held"):
        table.add_column(column)
    for service, row in status.items():
        table.add_row(service, str(row["unpublished"]), f"{row['oldest_age_s']:.1f}", str(row["parked"]),
                      str(row["held"]))
    console.print(table)
    for service, row in status.items():
        for parked in row["parked_rows"]:
            console.print(f"{service} outbox row {parked['id']} ({parked['topic']}, key {parked['key']},"
                          f" {parked['bytes']} bytes) parked at {parked['parked_at']}: {parked['error']}")


PARKED_IDS = typer.Option(None, "--id", help="A parked row's id (repeatable); none: every parked row")


def _release(service: str, ids: Optional[list[int]], *, discard: bool, as_json: bool) -> None:
    released = asyncio.run(interventions.release_parked_rows(dsn(), service_name(service), discard=discard,
                                                             ids=ids or None))
    if as_json:
        emit({"service": service, "discarded" if discard else "retried": released})
        return
    if not released:
        which = f" with id {', '.join(map(str, ids))}" if ids else ""
        print(f"tillstream: no parked outbox row in {service}{which}", file=sys.stderr)
        raise typer.Exit(1)
    console.print(f"{service}: {'discarded' if discard else 'publishing again'} outbox rows"
                  f" {', '.join(map(str, released))}; the rows they held flow again")


@outbox_app.command("retry")
def outbox_retry(service: str = typer.Option(..., "--service"), ids: Optional[list[int]] = PARKED_IDS,
                 as_json: bool = JSON) -> None:
    """Publish parked rows again (once the broker accepts them: its size limit raised, say);
    one refused again is parked again."""
    _release(service, ids, discard=False, as_json=as_json)


@outbox_app.command("discard")
def outbox_discard(service: str = typer.Option(..., "--service"), ids: Optional[list[int]] = PARKED_IDS,
                   yes: bool = YES, as_json: bool = JSON) -> None:
    """Drop parked rows for good: their events stay in the store but are never published, so
    subscribers never see them (`tillstream replay` could send them later)."""
    which = ", ".join(map(str, ids)) if ids else "every parked row"
    service_name(service)
    system()
    confirm(f"Discard {which} of {service}'s outbox? Subscribers will never see them.", yes)
    _release(service, ids, discard=True, as_json=as_json)


# -- sagas ----------------------------------------------------------------------------------
@saga_app.command("list")
def saga_list(include_ended: bool = typer.Option(False, "--all", help="Ended ones too (the latest 100)"),
              as_json: bool = JSON) -> None:
    """Completions in progress: the step each waits for, and its deadline."""
    found = asyncio.run(ops.sagas(dsn(), include_ended=include_ended))
    if as_json:
        emit(found)
        return
    table = Table(title="sagas")
    for column in ("saga id", "order", "status", "step", "deadline", "started", "failure"):
        table.add_column(column)
    for row in found:
        failure = row["failure"]["code"] if row["failure"] else ""
        table.add_row(row["id"], row["order_number"], row["status"], row["step"] or "",
                      str(row["deadline_at"] or ""), str(row["started_at"]), failure)
    console.print(table)
    for row in found:
        if row["failure"] and row["failure"].get("unanswered"):
            console.print(f"order {row['order_number']} ({row['id']}): failed by force; compensations left"
                          f" unanswered: {', '.join(row['failure']['unanswered'])}", soft_wrap=True)


@saga_app.command("abort")
def saga_abort(saga: str = typer.Argument(..., help="Saga id or order number"),
               wait: float = typer.Option(10.0, "--wait", help="Seconds to wait for the compensations (0: don't)"),
               force: bool = typer.Option(False, "--force", help="Then stop waiting for compensations not answered"
                                          " within --wait: the completion fails, naming them"),
               yes: bool = YES, as_json: bool = JSON) -> None:
    """Compensate a stuck completion now: stock released, coupons freed, payments voided.
    With --force, a completion whose compensations are not answered (within --wait) is
    ended anyway: failed, with the compensations left unanswered, for someone to see to."""
    system()
    confirm(f"Abort the completion {saga}{' (and fail it if not compensated in time)' if force else ''}?", yes)
    aborted = asyncio.run(ops.abort_saga(dsn(), saga))
    _wait_for_end(aborted, wait)
    forced = asyncio.run(interventions.force_saga_end(dsn(), saga)) if force else []
    _wait_for_end(forced, max(wait, 10.0))
    forced_ids = {row["id"] for row in forced}
    aborted = [row for row in aborted if row["id"] not in forced_ids] + forced
    if not aborted:
        print(f"tillstream: no running{' or compensating' if force else ''} completion for {saga}", file=sys.stderr)
        raise typer.Exit(1)
    if as_json:
        emit(aborted)
        return
    for row in aborted:
        action = "its compensations given up" if row["id"] in forced_ids else "abort requested"
        console.print(f"{row['id']} (order {row['order_number']}): {action} at step {row['step']};"
                      f" now {row['status']}")


def _wait_for_end(rows: list[dict], wait: float) -> None:
    deadline = time.monotonic() + wait
    for row in rows:
        while wait and time.monotonic() < deadline:
            row["status"] = asyncio.run(ops.saga_status(dsn(), row["id"]))
            if row["status"] in ("completed", "failed"):
                break
            time.sleep(0.2)


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
