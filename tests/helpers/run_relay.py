"""Runs one outbox relay as its own process, so a test can kill -9 it mid-batch."""
import asyncio
import sys

from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from shared.settings import load_settings


async def main(schema: str) -> None:
    settings = load_settings()
    producer = make_producer(settings)
    await producer.start()
    try:
        await OutboxRelay(settings, schema, producer).run()
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
