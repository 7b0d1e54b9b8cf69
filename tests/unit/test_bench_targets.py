"""The report's targets table: issue #26's counts, latency, rest and multiple of the peer."""
from bench.targets import parse_peer, targets


def level(concurrency: int, flows_per_s: float, *, statements: float = 250.0, calls: float = 0.0,
          complete_p99: float = 40.0) -> dict:
    return {"dialect": "solidus", "concurrency": concurrency, "flows_per_s": flows_per_s, "failed": 0,
            "cpu_relative_to_load_generator": 3.2, "saga_lag_ms": {"p99": 45.0},
            "work_per_flow": {"internal_calls": calls, "statements": statements},
            "endpoints_ms": {"POST /orders": {"p99": 30.0}, "PUT complete": {"p99": complete_p99}}}


def result(**kwargs) -> dict:
    return {"levels": [level(8, 12.0, complete_p99=160.0), level(32, 15.0, statements=59.0)],
            "rebuild": {"events_per_s": 30_000, "events": 100_000}, "services_rss_mib": 90.0,
            "idle_cpu_cores": {"tillstream": 0.02, "broker (tansu)": 0.04}, "topology": "one-process", **kwargs}


def test_the_counts_latency_and_rest_are_held_to_issue_26():
    met = {name: (measured, ok) for name, _, measured, ok in targets(result())}
    assert met["p99 of `complete` at 8 concurrent"] == ("160.0 ms", False)
    assert met["PostgreSQL statements per Solidus checkout at 32"] == ("59.0", True)
    assert met["system CPU ÷ load generator CPU, Solidus at 32"] == ("3.2", True)
    assert met["internal HTTP calls per Solidus checkout at 32 (one-process)"] == ("0.0", True)
    assert met["the system at rest"] == ("0.06 cores", False)
    assert not any(name.endswith("Vendure's in the same hour") for name in met)


def test_the_peer_measured_in_the_same_hour_gives_the_multiple():
    rows = {name: (measured, ok) for name, _, measured, ok in
            targets(result(peer_flows_per_s=parse_peer("8=3.2,32=3.75")))}
    assert rows["Solidus checkouts/s at 8 ÷ Vendure's in the same hour"] == ("12.0 ÷ 3.2 = 3.75×", False)
    assert rows["Solidus checkouts/s at 32 ÷ Vendure's in the same hour"] == ("15.0 ÷ 3.75 = 4.00×", True)
    assert parse_peer(None) == {} and parse_peer("") == {}
