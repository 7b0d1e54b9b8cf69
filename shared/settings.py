"""Every setting a Tillstream process reads, with its default, from the environment.

The README's "Settings" table documents each one; keep the two in step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=lambda: os.environ.get("DATABASE_URL", ""))
    kafka_bootstrap_servers: str = field(
        default_factory=lambda: os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    # The embedded broker does not wake a waiting fetch when data arrives, so this bounds
    # produce-to-consume latency (10 ms: p99 ~5 ms; aiokafka's 500 ms default: p99 ~250 ms).
    kafka_fetch_max_wait_ms: int = field(default_factory=lambda: _int("KAFKA_FETCH_MAX_WAIT_MS", 10))
    # For subscriptions no request waits on (`Subscription.background`): polling costs the
    # broker and the client CPU every fetch wait, whether or not anything arrived.
    kafka_background_fetch_max_wait_ms: int = field(
        default_factory=lambda: _int("KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS", 100))
    # A consumer that found nothing for this long stops fetching until a relay publishes to
    # its topics (shared/wakeup.py), or the backstop passes.
    consumer_idle_after_ms: int = field(default_factory=lambda: _int("CONSUMER_IDLE_AFTER_MS", 200))
    # With every service in one process (tillstream/host.py), consumers are the backstop of
    # calls and inline projections: each waits this long after a batch (shared/consumer.py pace).
    # 250 rather than 50: 5 same-hour pairs gave system CPU / load generator 9.27 -> 8.73 (the
    # broker's CPU per checkout ~-25%); a lost reply is answered at most 0.2 s later.
    backstop_consumer_pace_ms: int = field(default_factory=lambda: _int("BACKSTOP_CONSUMER_PACE_MS", 250))
    consumer_wake_backstop_ms: int = field(default_factory=lambda: _int("CONSUMER_WAKE_BACKSTOP_MS", 1000))
    kafka_session_timeout_ms: int = field(default_factory=lambda: _int("KAFKA_SESSION_TIMEOUT_MS", 6000))
    kafka_heartbeat_interval_ms: int = field(default_factory=lambda: _int("KAFKA_HEARTBEAT_INTERVAL_MS", 1000))
    kafka_rebalance_timeout_ms: int = field(default_factory=lambda: _int("KAFKA_REBALANCE_TIMEOUT_MS", 6000))
    kafka_topic_partitions: int = field(default_factory=lambda: _int("KAFKA_TOPIC_PARTITIONS", 6))
    kafka_replication_factor: int = field(default_factory=lambda: _int("KAFKA_REPLICATION_FACTOR", 1))
    kafka_commit_interval_ms: int = field(default_factory=lambda: _int("KAFKA_COMMIT_INTERVAL_MS", 200))
    consumer_max_attempts: int = field(default_factory=lambda: _int("CONSUMER_MAX_ATTEMPTS", 3))
    # Deadlines of the completion saga's steps (services/order/saga.py): a step not answered
    # in time is compensated. Payment gateways are slower than our own services.
    saga_lock_cart_deadline_ms: int = field(default_factory=lambda: _int("SAGA_LOCK_CART_DEADLINE_MS", 10000))
    saga_stock_deadline_ms: int = field(default_factory=lambda: _int("SAGA_STOCK_DEADLINE_MS", 10000))
    saga_payment_deadline_ms: int = field(default_factory=lambda: _int("SAGA_PAYMENT_DEADLINE_MS", 30000))
    # A compensation not answered within this is sent again (doubling each time, to 5 minutes).
    saga_compensation_retry_ms: int = field(default_factory=lambda: _int("SAGA_COMPENSATION_RETRY_MS", 5000))
    # How often each saga worker looks for instances past their deadline.
    saga_sweep_interval_ms: int = field(default_factory=lambda: _int("SAGA_SWEEP_INTERVAL_MS", 1000))
    # A step's call whose reply was not recorded (a crash, a timeout, an outage) is made again
    # after this, doubling each time up to 5 s, until the step's deadline.
    saga_step_retry_ms: int = field(default_factory=lambda: _int("SAGA_STEP_RETRY_MS", 1000))
    # How long the saga waits for a participant's reply to one call (then the retry takes over).
    saga_call_timeout_ms: int = field(default_factory=lambda: _int("SAGA_CALL_TIMEOUT_MS", 10000))
    # Calls of a step that raise (not an outage) before the step fails (`step_failed`).
    saga_step_max_attempts: int = field(default_factory=lambda: _int("SAGA_STEP_MAX_ATTEMPTS", 3))
    # Sagas one process drives at once (a restart that finds many due does not stampede).
    saga_max_drives: int = field(default_factory=lambda: _int("SAGA_MAX_DRIVES", 64))
    # Orders a consumer handles at once; each holds a pool connection, the API needs some.
    consumer_concurrency: int = field(default_factory=lambda: _int("CONSUMER_CONCURRENCY", 6))
    # Messages a consumer holds fetched but not yet handled before it stops fetching more.
    consumer_max_in_flight: int = field(default_factory=lambda: _int("CONSUMER_MAX_IN_FLIGHT", 500))
    consumer_retry_backoff_ms: int = field(default_factory=lambda: _int("CONSUMER_RETRY_BACKOFF_MS", 50))
    outbox_batch_size: int = field(default_factory=lambda: _int("OUTBOX_BATCH_SIZE", 500))
    # NOTIFY wakes the relay at once; this poll is only the backstop for a lost notification.
    outbox_poll_interval_s: float = field(default_factory=lambda: _float("OUTBOX_POLL_INTERVAL_S", 1.0))
    # The relay deletes what it published, and NOTIFYs consumers in other processes, in the
    # statement that reads its next batch; once no append has come for this long after a
    # publish, in a statement of its own (shared/outbox.py). It bounds how long a published
    # row still counts in the outbox backlog, and how late another process hears of it.
    outbox_flush_ms: int = field(default_factory=lambda: _int("OUTBOX_FLUSH_MS", 100))
    # ... and the next read deletes them once this many wait, however young.
    outbox_flush_rows: int = field(default_factory=lambda: _int("OUTBOX_FLUSH_ROWS", 200))
    # Woken from idle, the relay waits this long before it reads, so the commits of that
    # moment go out in one round (one statement, one produce request) rather than one each.
    # No request waits for the broker in one process; it delays what subscribers see by this.
    outbox_linger_ms: int = field(default_factory=lambda: _int("OUTBOX_LINGER_MS", 20))
    # ... and this long instead with every service in one process (tillstream/host.py), where
    # no request waits for the broker: 60 rather than 20 took 53 -> 51 statements per checkout
    # and the CPU ratio 8.90 -> 8.49 (three same-hour pairs); subscribers hear up to 40 ms later.
    one_process_outbox_linger_ms: int = field(default_factory=lambda: _int("ONE_PROCESS_OUTBOX_LINGER_MS", 60))
    # Empty the services' topics after the relays have published this many messages, once
    # every consumer group has handled them (shared/recycle.py): only for an embedded broker
    # that keeps every message, started by this system for one process. 0: never.
    broker_recycle_after_messages: int = field(default_factory=lambda: _int("BROKER_RECYCLE_AFTER_MESSAGES", 0))
    broker_recycle_check_s: float = field(default_factory=lambda: _float("BROKER_RECYCLE_CHECK_S", 2.0))
    broker_recycle_drain_s: float = field(default_factory=lambda: _float("BROKER_RECYCLE_DRAIN_S", 2.0))
    # An order placed with nothing paid nor authorised (a check, GetCandy's offline payment)
    # is canceled by the system, its stock released, if still unpaid this long after (0: never).
    unpaid_order_release_after_s: int = field(
        default_factory=lambda: _int("UNPAID_ORDER_RELEASE_AFTER_S", 172_800))
    unpaid_order_sweep_interval_s: float = field(
        default_factory=lambda: _float("UNPAID_ORDER_SWEEP_INTERVAL_S", 30.0))
    # The gauges on /metrics that need the database or the broker (shared/health.py) are
    # measured this often by one task per process, a round given up after the timeout. 0: never.
    metrics_refresh_ms: int = field(default_factory=lambda: _int("METRICS_REFRESH_MS", 5000))
    metrics_refresh_timeout_ms: int = field(default_factory=lambda: _int("METRICS_REFRESH_TIMEOUT_MS", 10000))
    # Reference data (locations, shipping and payment methods, countries, variants and prices)
    # a service keeps per process, dropped in every process when it changes (shared/reference_cache.py):
    # answers kept per service (0: none), and the longest one is served, as a backstop.
    reference_cache_entries: int = field(default_factory=lambda: _int("REFERENCE_CACHE_ENTRIES", 10_000))
    reference_cache_max_age_s: float = field(default_factory=lambda: _float("REFERENCE_CACHE_MAX_AGE_S", 60.0))
    # Orders' facts fixed at creation (number, dialect, guest token digest, currency) a gateway
    # process keeps to authorise callers without reading the order (services/gateway/order_access.py),
    # least recently used out (0: none).
    gateway_order_access_entries: int = field(default_factory=lambda: _int("GATEWAY_ORDER_ACCESS_ENTRIES", 10_000))
    # How long a process told to stop waits for each thing it stops (a consumer's last commit,
    # a pool's connections, open requests), and then, however it is doing, it exits
    # (shared/shutdown.py): a supervisor restarts only a process that has exited.
    shutdown_timeout_ms: int = field(default_factory=lambda: _int("SHUTDOWN_TIMEOUT_MS", 10000))
    db_pool_min: int = field(default_factory=lambda: _int("DB_POOL_MIN", 2))
    db_pool_max: int = field(default_factory=lambda: _int("DB_POOL_MAX", 10))
    log_level: str = field(default_factory=lambda: os.environ.get("LOG_LEVEL", "INFO"))
    # The credentials of the callers of services' operations over HTTP, each scoped to what
    # its caller needs (shared/service_access.py); none configured: no such call is accepted.
    gateway_key: str = field(default_factory=lambda: os.environ.get("TILLSTREAM_GATEWAY_KEY", ""))
    operator_key: str = field(default_factory=lambda: os.environ.get("TILLSTREAM_OPERATOR_KEY", ""))
    # The order service's key for calling its participants (cart, shipping, payment) when
    # they run apart (shared/service_access.py); a system generates one for its processes.
    order_key: str = field(default_factory=lambda: os.environ.get("TILLSTREAM_ORDER_KEY", ""))
    # Where the bus, /metrics and /readyz answer (shared/internal.py): never the public port.
    internal_listen: str = field(default_factory=lambda: os.environ.get("TILLSTREAM_INTERNAL_LISTEN",
                                                                         "127.0.0.1:8001"))
    # Required: the payment gateway to charge cards with. "test" (Solidus's Bogus gateway)
    # only with TILLSTREAM_DEVELOPMENT (shared/safety.py).
    payment_gateway: str = field(default_factory=lambda: os.environ.get("TILLSTREAM_PAYMENT_GATEWAY", ""))
    development: bool = field(default_factory=lambda: _flag("TILLSTREAM_DEVELOPMENT"))
    # Fault injection (shared/faults.py) is honoured only with this flag.
    chaos: bool = field(default_factory=lambda: _flag("TILLSTREAM_CHAOS"))

    @property
    def shutdown_timeout_s(self) -> float:
        return self.shutdown_timeout_ms / 1000

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set (make run and the tests set it for you)")
        return self.database_url


def load_settings() -> Settings:
    return Settings()


def service_urls(names: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """Where each service's instances answer when apart: `<NAME>_URL`, comma-separated when
    there are several (the distributed topology's defaults: 8101, 8102, ... in `names`' order)."""
    return {name: os.environ.get(f"{name.upper()}_URL", f"http://127.0.0.1:{8101 + i}").split(",")
            for i, name in enumerate(names)}
