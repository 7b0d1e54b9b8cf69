"""`make soak` (or `make bench BENCH_ARGS="--soak 600"`): 8 concurrent Solidus checkouts for
a long time, reported minute by minute: checkouts/s, failures, flow p99, each process's
memory (PSS: shared pages split among the processes sharing them) and CPU seconds per
checkout, and the messages the broker holds. The embedded broker keeps every message in
memory, so what a long-running `make run` costs shows here. Results go to
bench/results/<date>-soak.json and the "Soak" section of docs/performance.md.

Targets (issue #16): checkouts/s in the last minute ≥ 90% of the first; no process's memory
grows by more than 20% after the second minute (PSS: a sum of RSS would count
PostgreSQL's shared buffers once per backend that touched them).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.harness import ROOT, bench_data, machine, parse, results_path, run_level, system_config
from bench.watch import ProcessWatch
from shared.kafka import TOPICS
from tillstream import operations
from tillstream.demo import load_demo_data
from tillstream.system import System

CONCURRENCY = 8
BEGIN, END = "<!-- soak: written by bench/soak.py -->", "<!-- /soak -->"


def verdict(minutes: list[dict]) -> dict:
    first, last = minutes[0], minutes[-1]
    throughput = round(last["flows_per_s"] / first["flows_per_s"], 3) if first["flows_per_s"] else None
    growth = {}
    if len(minutes) > 2:
        base = minutes[1]["memory_mib"]
        growth = {name: round(max(m["memory_mib"][name] for m in minutes[2:]) / base[name] - 1, 3)
                  for name in base if base[name]}
    return {"last_to_first_flows": throughput, "memory_growth_after_minute_2": growth,
            "throughput_held": throughput is not None and throughput >= 0.9,
            "memory_bounded": bool(growth) and all(g <= 0.2 for g in growth.values())}


def write_section(result: dict, doc: Path) -> None:
    v = result["verdict"]
    names = list(result["minutes"][0]["memory_mib"])
    lines = [BEGIN, "## Soak (the latest `make soak`)", "",
             f"{result['started_at'][:16]} UTC, {result['topology']}, {CONCURRENCY} concurrent Solidus checkouts for"
             f" {len(result['minutes'])} minutes; speed probe {result['machine']['speed_probe_ms']} ms.", "",
             "| minute | checkouts/s | failed | flow p99 ms | broker messages held | "
             + " | ".join(f"{n} MiB" for n in names) + " | "
             + " | ".join(f"{n} CPU-ms per checkout" for n in names) + " |",
             "|---|---|---|---|---|" + "---|" * 2 * len(names)]
    for m in result["minutes"]:
        lines.append(f"| {m['minute']} | {m['flows_per_s']} | {m['failed']} | {m['flow_p99_ms']} |"
                     f" {m['broker_messages_held']} | " + " | ".join(str(m["memory_mib"][n]) for n in names) + " | "
                     + " | ".join(str(m["cpu_ms_per_checkout"][n]) for n in names) + " |")
    lines += ["", f"Last minute ÷ first: {v['last_to_first_flows']} (target ≥ 0.9: "
              f"{'met' if v['throughput_held'] else '**not met**'}). Memory (PSS) growth after minute 2: "
              + ", ".join(f"{k} {100 * g:+.1f}%" for k, g in v["memory_growth_after_minute_2"].items())
              + f" (target ≤ +20% each: {'met' if v['memory_bounded'] else '**not met**'}).", "", END]
    text = doc.read_text()
    if BEGIN in text:
        before, rest = text.split(BEGIN, 1)
        text = before + "\n".join(lines) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    doc.write_text(text)


async def soak(args: argparse.Namespace) -> dict:
    from bench import work

    workdir = Path(tempfile.mkdtemp(prefix="tillstream-soak-"))
    workdir.chmod(0o755)  # its own folder (0700 from mkdtemp): PostgreSQL's user must enter it when run as root
    speed = work.speed_probe()
    system = await asyncio.to_thread(lambda: System(system_config(args, workdir)).start())
    try:
        await asyncio.to_thread(load_demo_data, system)
        variant_hash = await bench_data(system)
        started_at = datetime.now(timezone.utc)
        minutes = []
        with ProcessWatch(system) as watch:
            for minute in range(1, math.ceil(args.soak / 60) + 1):
                seconds = min(60.0, args.soak - 60 * (minute - 1))
                cpu_before = watch.cpu_by_process()
                level = await run_level(system.gateway_url, "solidus", CONCURRENCY, seconds, variant_hash)
                checkouts = max(1, level["completed"])
                cpu_ms = {name: round(1000 * spent / checkouts, 1)
                          for name, spent in watch.cpu_since(cpu_before).items()}
                minutes.append({"minute": minute, "flows_per_s": level["flows_per_s"], "failed": level["failed"],
                                "flow_p99_ms": level["flow_ms"]["p99"], "memory_mib": watch.memory_now(),
                                "cpu_ms_per_checkout": cpu_ms,
                                "broker_messages_held": await operations.messages_held(system.bootstrap_servers,
                                                                                      TOPICS)})
                print(f"[soak] minute {minute}: {json.dumps(minutes[-1])}", file=sys.stderr)
        result = {"started_at": started_at.isoformat(), "machine": machine() | {"speed_probe_ms": speed},
                  "topology": args.topology, "instances": args.instances, "concurrency": CONCURRENCY,
                  "minutes": minutes, "verdict": verdict(minutes)}
        out = results_path(ROOT / "bench" / "results", f"{started_at.date()}-soak")
        out.write_text(json.dumps(result, indent=2))
        write_section(result, ROOT / "docs" / "performance.md")
        print(json.dumps(result, indent=2))
        print(f"[soak] results in {out} and docs/performance.md", file=sys.stderr)
        return result
    finally:
        await asyncio.to_thread(system.stop)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    arguments = parse()
    arguments.soak = arguments.soak or 600
    asyncio.run(soak(arguments))
