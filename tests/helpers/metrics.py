"""The running system's Prometheus counters, as the tests read them from its /metrics."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def counted(system, sample: str, **labels: str) -> float:
    """A counter of the system's process (the samples named `sample` with these labels, summed)."""
    metrics = httpx.get(f"{system.internal_url}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(metrics) for s in family.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def consumed(system, consumer: str, *outcomes: str) -> float:
    """The messages `consumer` (a handler: `shipping.orders`) counted under these outcomes
    (`tillstream_consumer_messages{consumer,outcome}`: processed, duplicate, applied_inline, ...)."""
    return sum(counted(system, "tillstream_consumer_messages_total", consumer=consumer, outcome=outcome)
               for outcome in outcomes)
