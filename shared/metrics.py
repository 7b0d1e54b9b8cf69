"""Prometheus metrics shared by every service (exposed on /metrics)."""
from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Histogram(
    "tillstream_http_request_seconds", "HTTP request latency", ["service", "method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_APPENDED = Counter("tillstream_events_appended_total", "Events appended to the store", ["schema"])
STREAM_READS = Counter("tillstream_stream_reads_total",
                       "Queries of one event stream: an aggregate's load, or a step's answers found again",
                       ["schema", "query"])
OUTBOX_PUBLISHED = Counter("tillstream_outbox_published_total", "Outbox messages published", ["schema"])
CONSUMED = Counter("tillstream_consumer_messages_total", "Messages handled", ["consumer", "outcome"])
SAGA_ANSWERS = Counter("tillstream_saga_answers_recorded_total",
                       "Answers a saga's drive recorded from a call's reply: in one statement on the row as it"
                       " knew it, or in a transaction (a local step, a failure, the row moved on meanwhile)",
                       ["saga", "how"])
HANDLE_SECONDS = Histogram(
    "tillstream_consumer_handle_seconds", "Time to handle one message", ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
ADMISSION_SHED = Counter("tillstream_gateway_shed_total",
                         "Public requests answered 503 after waiting GATEWAY_QUEUE_TIMEOUT_MS for a slot")
BROKER_EMPTIED = Counter("tillstream_broker_topics_emptied_total",
                         "Times the embedded broker's topics were emptied (shared/recycle.py), by outcome",
                         ["outcome"])
BROKER_PAUSE_SECONDS = Histogram(
    "tillstream_broker_recycle_pause_seconds", "How long the relays stood still while the topics were emptied",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
