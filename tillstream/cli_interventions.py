"""The `tillstream` commands that intervene (tillstream/cli.py registers them): dead letters
(`dlq`), the outboxes' parked rows (`outbox`) and completions in progress (`saga`). The work
itself is in operations.py and interventions.py."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import Optional

import typer
from rich.table import Table

from tillstream import dead_letters as dlq
from tillstream import interventions
from tillstream import operations as ops
from tillstream.cli_base import JSON, YES, confirm, console, dsn, emit, service_name, system

dlq_app = typer.Typer(help="Dead-lettered messages.", no_args_is_help=True)
outbox_app = typer.Typer(help="The transactional outboxes.", no_args_is_help=True)
saga_app = typer.Typer(help="Completions in progress (the order saga).", no_args_is_help=True)


# -- dead letters ---------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(service: Optional[str] = typer.Option(None, "--service"), as_json: bool = JSON) -> None:
    """Dead-lettered messages (durable copies; the <topic>.dlq topics hold them too)."""
    letters = asyncio.run(dlq.dead_letters(dsn(), service_name(service)))
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
    letter = next((d for d in asyncio.run(dlq.dead_letters(dsn(), service_name(service), with_value=True))
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
    letter = asyncio.run(dlq.replay_dead_letter(dsn(), service_name(service), letter_id))
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
    removed = asyncio.run(dlq.purge_dead_letters(dsn(), service, letter_id=letter_id, replayed_only=replayed))
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
