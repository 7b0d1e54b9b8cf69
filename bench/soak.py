"""`make soak` (or `make bench BENCH_ARGS="--soak 600"`): 8 concurrent Solidus checkouts for
a long time, reported minute by minute: checkouts/s, failures, flow p99, each process's RSS
and the messages the broker holds. The embedded broker keeps every message in memory, so
what a long-running `make run` costs shows here. Results go to
bench/results/<date>-soak.json and the "Soak" section of docs/performance.md.

Targets (issue #16): checkouts/s in the last minute ≥ 90% of the first; no process's RSS
grows by more than 20% after the second minute.
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

from bench.run import ROOT, ProcessWatch, bench_data, machine, results_path, run_level, system_config
from shared.bus import EVENT_TOPICS
from tillstream import operations
from tillstream.demo import load_demo_data
from tillstream.system import System

CONCURRENCY = 8
BEGIN, END = "<!-- soak: written by bench/soak.py -->", "<!-- /soak -->"


def rss_now(watch: ProcessWatch) -> dict[str, float]:
    found = {}
    for name, root in watch.roots.items():
        total = 0
        for proc in watch.family(root):
            try:
                total += proc.memory_info().rss
            except Exception:  # psutil: the process went meanwhile
                pass
        found[name] = round(total / 2**20, 1)
    return found


def verdict(minutes: list[dict]) -> dict:
    first, last = minutes[0], minutes[-1]
    throughput = round(last["flows_per_s"] / first["flows_per_s"], 3) if first["flows_per_s"] else None
    growth = {}
    if len(minutes) > 2:
        base = minutes[1]["rss_mib"]
        growth = {name: round(max(m["rss_mib"][name] for m in minutes[2:]) / base[name] - 1, 3)
                  for name in base if base[name]}
    return {"last_to_first_flows": throughput, "rss_growth_after_minute_2": growth,
            "throughput_held": throughput is not None and throughput >= 0.9,
            "rss_bounded": bool(growth) and all(g <= 0.2 for g in growth.values())}


def write_section(result: dict, doc: Path) -> None:
    v = result["verdict"]
    names = list(result["minutes"][0]["rss_mib"])
    lines = [BEGIN, "## Soak (the latest `make soak`)", "",
             f"{result['started_at'][:16]} UTC, {result['topology']}, {CONCURRENCY} concurrent Solidus checkouts for"
             f" {len(result['minutes'])} minutes; speed probe {result['machine']['speed_probe_ms']} ms.", "",
             "| minute | checkouts/s | failed | flow p99 ms | broker messages held | "
             + " | ".join(f"RSS {n} MiB" for n in names) + " |",
             "|---|---|---|---|---|" + "---|" * len(names)]
    for m in result["minutes"]:
        lines.append(f"| {m['minute']} | {m['flows_per_s']} | {m['failed']} | {m['flow_p99_ms']} |"
                     f" {m['broker_messages_held']} | " + " | ".join(str(m["rss_mib"][n]) for n in names) + " |")
    lines += ["", f"Last minute ÷ first: {v['last_to_first_flows']} (target ≥ 0.9: "
              f"{'met' if v['throughput_held'] else '**not met**'}). RSS growth after minute 2: "
              + ", ".join(f"{k} {100 * g:+.1f}%" for k, g in v["rss_growth_after_minute_2"].items())
              + f" (target ≤ +20% each: {'met' if v['rss_bounded'] else '**not met**'}).", "", END]
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
                level = await run_level(system.gateway_url, "solidus", CONCURRENCY, seconds, variant_hash)
                minutes.append({"minute": minute, "flows_per_s": level["flows_per_s"], "failed": level["failed"],
                                "flow_p99_ms": level["flow_ms"]["p99"], "rss_mib": rss_now(watch),
                                "broker_messages_held": await operations.messages_held(system.bootstrap_servers,
                                                                                      EVENT_TOPICS)})
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
    from bench.run import parse

    arguments = parse()
    arguments.soak = arguments.soak or 600
    asyncio.run(soak(arguments))
