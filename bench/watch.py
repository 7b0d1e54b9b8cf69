"""What the benchmark watches in the system's processes: CPU time and memory per process
(with its children: PostgreSQL's backends, the broker), the system at rest, and py-spy
profiles of the Python processes."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from tillstream.system import System


class ProcessWatch:
    """Samples RSS of every process of the system and totals their CPU time."""

    def __init__(self, system: System) -> None:
        self.roots = {name: psutil.Process(p.pid) for name, p in system.processes.items()}
        if system.broker:
            self.roots["broker (tansu)"] = psutil.Process(system.broker.proc.pid)
        if system.postgres:
            self.roots["postgresql"] = psutil.Process(system.postgres.proc.pid)
        self.peak_rss: dict[str, int] = {name: 0 for name in self.roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def family(self, root: psutil.Process) -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _total(self, root: psutil.Process, measure) -> float:
        """`measure(process)` summed over `root` and its children (one that went meanwhile
        counts nothing)."""
        total = 0
        for proc in self.family(root):
            try:
                total += measure(proc)
            except psutil.Error:
                pass
        return total

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far per process with its children, live or gone: a PostgreSQL
        backend that exits (a pool retiring an idle connection) takes its CPU time with it
        from the live list, into its parent's count of reaped children."""
        def cpu(proc: psutil.Process) -> float:
            times = proc.cpu_times()
            return times.user + times.system + times.children_user + times.children_system
        return {name: self._total(root, cpu) for name, root in self.roots.items()}

    def cpu_since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds per process spent since `before` (a `cpu_by_process()` reading)."""
        return {name: spent - before[name] for name, spent in self.cpu_by_process().items()}

    def memory_now(self) -> dict[str, float]:
        """Proportional set size (MiB) per process with its children: shared pages are split
        among the processes sharing them, so PostgreSQL's shared buffers count once, not
        once per backend as a sum of RSS would."""
        return {name: round(self._total(root, lambda proc: proc.memory_full_info().pss) / 2**20, 1)
                for name, root in self.roots.items()}

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for name, root in self.roots.items():
                rss = self._total(root, lambda proc: proc.memory_info().rss)
                self.peak_rss[name] = max(self.peak_rss[name], rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def at_rest(watch: ProcessWatch, seconds: float) -> dict[str, float]:
    """Cores each process uses with the system running and no requests: what polling
    (consumers fetching every KAFKA_FETCH_MAX_WAIT_MS), timers and heartbeats cost. Every
    level's CPU per flow includes this share."""
    await asyncio.sleep(2)  # the demo data's events are still being handled
    before = watch.cpu_by_process()
    await asyncio.sleep(seconds)
    return {name: round(spent / seconds, 3) for name, spent in watch.cpu_since(before).items()}


class Profiler:
    """py-spy on every Python process of the system for the length of one level."""

    def __init__(self, system: System, out_dir: Path) -> None:
        self.pids = {name: p.pid for name, p in system.processes.items()}
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.running: list[subprocess.Popen] = []

    def start(self, label: str, duration: float) -> None:
        spy = Path(sys.executable).with_name("py-spy")
        self.running = [subprocess.Popen(
            [str(spy), "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "200",
             "--format", "raw", "--function", "--nonblocking", "--output", str(self.out_dir / f"{label}-{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in self.pids.items()]

    def stop(self) -> None:
        for proc in self.running:
            proc.wait(timeout=60)
        self.summarise()

    def summarise(self, top: int = 25) -> None:
        """Self time per function and inclusive time per module, per collapsed-stack file."""
        lines = []
        for path in sorted(self.out_dir.glob("*-*.txt")):
            self_time: dict[str, int] = {}
            inclusive: dict[str, int] = {}
            total = 0
            for row in path.read_text().splitlines():
                stack, _, count = row.rpartition(" ")
                if not count.isdigit():
                    continue
                n = int(count)
                total += n
                frames = stack.split(";")
                self_time[frames[-1]] = self_time.get(frames[-1], 0) + n
                for frame in set(frames):
                    inclusive[frame] = inclusive.get(frame, 0) + n
            if not total:
                continue
            lines.append(f"== {path.stem}: {total} samples")
            lines.append("  self:")
            lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in sorted(self_time.items(),
                                                                             key=lambda kv: -kv[1])[:top]]
            lines.append("  inclusive:")
            lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in sorted(inclusive.items(),
                                                                             key=lambda kv: -kv[1])[:top]]
        (self.out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
