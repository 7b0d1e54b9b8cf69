"""The targets a `make bench` run is held against, as rows of the report's table.

Issue #16's (the request path's shape: work per checkout, latency, and throughput as a
multiple of the peer measured in the same hour) come first; issue #7's that #16 does not
restate stay, so a run still shows whether it keeps them.
"""
from __future__ import annotations

COMPLETING = ("PUT complete", "POST orders/process")
PEER_MULTIPLE = 5  # issue #16: ≥ 5× Vendure's checkouts/s, side by side in the same hour

Row = tuple[str, str, str, bool]


def request_p99(level: dict) -> tuple[tuple[str, float], float | None]:
    """The slowest p99 among the ordinary requests, and the p99 of the completing one."""
    ordinary = {k: v["p99"] for k, v in level["endpoints_ms"].items() if k not in COMPLETING and v["p99"] is not None}
    completing = next((level["endpoints_ms"][k]["p99"] for k in COMPLETING if k in level["endpoints_ms"]), None)
    return max(ordinary.items(), key=lambda kv: kv[1], default=("-", 0.0)), completing


def parse_peer(text: str | None) -> dict[int, float]:
    """`--peer 8=2.6,32=2.9`: the peer's checkouts/s per concurrency, measured this hour."""
    if not text:
        return {}
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {int(concurrency): float(rate) for concurrency, rate in pairs}


def targets(result: dict) -> list[Row]:
    return work_targets(result) + peer_targets(result) + latency_targets(result) + kept_targets(result)


def work_targets(result: dict) -> list[Row]:
    at32 = _level(result, "solidus", 32)
    if at32 is None:
        return []
    work = at32["work_per_flow"]
    where = f" ({result.get('topology', 'one-process')})"
    return [
        ("internal HTTP calls per Solidus checkout at 32" + where, "0", f"{work['internal_calls']}",
         work["internal_calls"] == 0),
        ("PostgreSQL statements per Solidus checkout at 32", "≤ 80", f"{work.get('statements', '-')}",
         work.get("statements") is not None and work["statements"] <= 80),
        ("system CPU ÷ load generator CPU, Solidus at 32", "≤ 3.5", f"{at32['cpu_relative_to_load_generator']}",
         at32["cpu_relative_to_load_generator"] <= 3.5),
        ("failed Solidus checkouts at 32", "0", f"{at32['failed']}", at32["failed"] == 0),
    ]


def peer_targets(result: dict) -> list[Row]:
    rows = []
    for concurrency, peer in sorted(result.get("peer_flows_per_s", {}).items()):
        level = _level(result, "solidus", int(concurrency))
        if level is not None and peer > 0:
            multiple = level["flows_per_s"] / peer
            rows.append((f"Solidus checkouts/s at {concurrency} ÷ Vendure's in the same hour",
                         f"≥ {PEER_MULTIPLE}×", f"{level['flows_per_s']} ÷ {peer} = {multiple:.2f}×",
                         multiple >= PEER_MULTIPLE))
    return rows


def latency_targets(result: dict) -> list[Row]:
    rows = []
    if at8 := _level(result, "solidus", 8):
        (name, slowest), completing = request_p99(at8)
        if completing is not None and completing > slowest:
            name, slowest = "PUT complete", completing
        rows.append(("p99 of every request at 8 concurrent", "≤ 50 ms", f"{slowest} ms ({name})", slowest <= 50))
    if at32 := _level(result, "solidus", 32):
        lag = at32["saga_lag_ms"].get("p99")
        rows.append(("event lag p99 at 32 concurrent (saga)", "≤ 50 ms", f"{lag} ms", (lag or 0) <= 50))
    return rows


def kept_targets(result: dict) -> list[Row]:
    """Issue #7's."""
    rows = []
    if at8 := _level(result, "solidus", 8):
        _, completing = request_p99(at8)
        rows.append(("p99 of `complete` at 8 concurrent (#7)", "≤ 150 ms", f"{completing} ms",
                     (completing or 0) <= 150))
    rebuild = result["rebuild"]
    rows.append(("order view rebuild (#7)", "≥ 20,000 events/s (from 100,000)",
                 f"{rebuild['events_per_s']} events/s from {rebuild['events']}",
                 (rebuild["events_per_s"] or 0) >= 20_000 and rebuild["events"] >= 100_000))
    rows.append(("RSS of all service processes (#7)", "≤ 1 GiB", f"{result['services_rss_mib']} MiB",
                 result["services_rss_mib"] <= 1024))
    return rows


def _level(result: dict, dialect: str, concurrency: int) -> dict | None:
    return next((item for item in result["levels"] if (item["dialect"], item["concurrency"]) == (dialect, concurrency)),
                None)
