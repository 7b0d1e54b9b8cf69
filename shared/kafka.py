"""Kafka plumbing: producer and consumer factories with Tillstream's settings, and topics.

Durability and exactly-once effects come from PostgreSQL (outbox, processed-event
records), so the producer never asks for idempotence or transactions: the embedded
broker supports neither, and the outbox already tolerates a repeated publish.
"""
from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import Settings

log = logging.getLogger(__name__)

# Each service's own events (its aggregates' facts), keyed by order number.
EVENT_TOPICS = ("cart.events", "order.events", "shipping.events", "payment.events")
# Where the completion saga's commands to its participants were published (the order service's
# `CompletionSaga` streams, keyed by order number), before the saga called its participants
# (shared/saga_runner.py): retired, nothing new goes there; still created, for that history.
SAGA_TOPIC = "order.saga"
# Every topic the services publish to (each with its `<topic>.dlq`).
TOPICS = (*EVENT_TOPICS, SAGA_TOPIC)


def events_topic(service: str) -> str:
    return f"{service}.events"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=1,
    )


def make_consumer(settings: Settings, *topics: str, group_id: str, background: bool = False) -> AIOKafkaConsumer:
    """`background`: no request waits on this consumer, so it may fetch less often."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=(settings.kafka_background_fetch_max_wait_ms if background
                           else settings.kafka_fetch_max_wait_ms),
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_records=500,
    )


async def ensure_topics(settings: Settings, topics: list[str] | tuple[str, ...]) -> None:
    """Create the topics (and their DLQs) if missing; already-existing ones are fine."""
    wanted = sorted({t for topic in topics for t in (topic, dlq_topic(topic))
                     if not topic.endswith(".dlq")} | {t for t in topics if t.endswith(".dlq")})
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        for topic in missing:
            try:
                await admin.create_topics([NewTopic(
                    topic, num_partitions=settings.kafka_topic_partitions,
                    replication_factor=settings.kafka_replication_factor)])
                log.info("topic created", extra={"fields": {"topic": topic}})
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
