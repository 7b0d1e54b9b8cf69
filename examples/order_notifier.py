"""An example subscriber: an order notifier that knows Tillstream only by its contract.

It consumes `order.events` (consumer group `order-notifier`) and imports nothing but
`shared.contracts` and `shared.envelope`, as any internal subscriber would. The topic holds
one stream per key: the order's own events (aggregate type `Order`, aggregate id = the
message key, the order number), numbered 1..n; anything else on it (a dead-letter notice,
keyed by its own id) is passed over. Each event becomes one notification row in its own
SQLite database, keyed by event id, so a redelivered or replayed event is recorded once, and
an order's notifications follow its sequence: an event that arrives before an earlier one of
its order is held (in the database, so a restart keeps it) until the missing one comes, and
reported while it waits. Offsets are committed only after the rows are stored. Events of a
type it does not know (a newer contract) are still recorded, by name.

    python -m examples.order_notifier --db notifications.sqlite3 [--bootstrap HOST:PORT]
    (default: KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092)
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer

import shared.contracts  # noqa: F401  (registers the event models)
from shared.contracts.order import CompletionFailed, OrderCanceled, OrderCompleted, OrderCreated
from shared.envelope import EventEnvelope, decode_event, upcast


def notification_for(envelope: EventEnvelope) -> str:
    try:
        event = decode_event(envelope)
    except (LookupError, ValueError):
        return f"{envelope.contract_name} for order {envelope.aggregate_id}"
    match event:
        case OrderCreated():
            return f"Order {event.number} was started"
        case OrderCompleted():
            return f"Order {event.number} was placed: {event.total} ({event.payment_state})"
        case CompletionFailed():
            return f"Order {event.number} could not be placed: {event.message}"
        case OrderCanceled():
            return f"Order {event.number} was canceled"
    return f"{type(event).__name__} for order {envelope.aggregate_id}"


class OrderNotifier:
    def __init__(self, db_path: str, bootstrap_servers: str, group_id: str = "order-notifier") -> None:
        self.db = sqlite3.connect(db_path)
        self.db.execute("CREATE TABLE IF NOT EXISTS notifications (event_id TEXT PRIMARY KEY,"
                        " order_number TEXT NOT NULL, sequence INTEGER NOT NULL, event TEXT NOT NULL,"
                        " message TEXT NOT NULL, received_at TEXT NOT NULL)")
        # Events that came before an earlier one of their order: notified once it has come.
        self.db.execute("CREATE TABLE IF NOT EXISTS held (order_number TEXT NOT NULL, sequence INTEGER NOT NULL,"
                        " envelope TEXT NOT NULL, PRIMARY KEY (order_number, sequence))")
        self.db.commit()
        self.reported: set[tuple[str, int]] = set()  # gaps already reported
        self.consumer = AIOKafkaConsumer(
            "order.events", bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=10, session_timeout_ms=6000,
            heartbeat_interval_ms=1000, rebalance_timeout_ms=6000)

    def record(self, envelope: EventEnvelope) -> bool:
        """True the first time this event is seen."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO notifications VALUES (?, ?, ?, ?, ?, ?)",
            (str(envelope.event_id), envelope.aggregate_id, envelope.sequence, envelope.contract_name,
             notification_for(envelope), datetime.now(timezone.utc).isoformat()))
        return cursor.rowcount == 1

    def notified_up_to(self, number: str) -> int:
        return self.db.execute("SELECT coalesce(max(sequence), 0) FROM notifications WHERE order_number = ?",
                               (number,)).fetchone()[0]

    def receive(self, key: str, envelope: EventEnvelope) -> list[EventEnvelope]:
        """The events of `key` that can be notified now, in sequence: this one, if it is the
        next of its order, and those held behind it."""
        if envelope.aggregate_type != "Order" or envelope.aggregate_id != key:
            return []  # not one of the order's own events
        last = self.notified_up_to(key)
        if envelope.sequence <= last:
            return []  # seen before (a redelivery, a replay)
        if envelope.sequence > last + 1:
            self.db.execute("INSERT OR IGNORE INTO held VALUES (?, ?, ?)",
                            (key, envelope.sequence, envelope.model_dump_json()))
            if (key, last + 1) not in self.reported:
                self.reported.add((key, last + 1))
                print(f"order {key}: sequence {envelope.sequence} held, waiting for {last + 1}", file=sys.stderr,
                      flush=True)
            return []
        ready = [envelope]
        while (row := self.db.execute("SELECT envelope FROM held WHERE order_number = ? AND sequence = ?",
                                      (key, ready[-1].sequence + 1)).fetchone()) is not None:
            ready.append(EventEnvelope.model_validate_json(row[0]))
        self.db.execute("DELETE FROM held WHERE order_number = ? AND sequence <= ?", (key, ready[-1].sequence))
        return ready

    async def run(self, stop: asyncio.Event) -> None:
        await self.consumer.start()
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    for message in messages:
                        try:
                            envelope = upcast(EventEnvelope.from_json(message.value))
                        except ValueError:
                            continue  # not an event envelope: not ours to notify about
                        key = message.key.decode(errors="replace") if message.key else ""
                        for ready in self.receive(key, envelope):
                            if self.record(ready):
                                print(notification_for(ready), flush=True)
                if batch:
                    self.db.commit()
                    await self.consumer.commit()
        finally:
            self.db.commit()
            await self.consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="notifications.sqlite3")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092")
    parser.add_argument("--group", default="order-notifier")
    args = parser.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await OrderNotifier(args.db, args.bootstrap, args.group).run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
