"""bench-api: 50 salespeople on one API process (Locust, headless), idle and during a 100,000-recipient send.

    make bench-api
    .venv/bin/python benchmarks/bench_api.py [--users 50] [--idle-seconds 60] [--recipients 100000]
                                             [--send-wait 0-0] [--skip-send]

1. The API database: ``bulkmail_bench_api``, 100,000 seeded leads (made once by
   ``bench_api_requests.py``'s ``prepare``, then reused).
2. One API process (``bulkmail query-api``, uvicorn, one worker) on PostgreSQL.
3. Idle: Locust's ``benchmarks/locustfile_api.py`` (searching, paging, opening leads, previewing a
   template) with ``--users`` users that do not think between requests, for ``--idle-seconds``:
   the requests/s one API process serves (target >= 200), latencies per request type, errors.
4. A 100,000-recipient send alone (``bench_send.py``'s machinery: dispatcher + 2 mailers +
   Postfix smtp-sink, its own database), then the same send with the same users running from
   create to done (``--send-wait``: their think time, "min-max" seconds): p50/p95/p99 per request
   type, errors, and the send's rate with and without the load (targets: search first page p99
   < 300 ms, preview p99 < 1 s, 0 errors, rate drop < 20%).

   The users start 5 s before the send is created, all 50 at the same instant: that first burst
   of 50 simultaneous requests at an API idle since the send alone is no salesperson's day, and
   on a quiet machine it alone takes ~0.6 s (1.5 s beside the send's start-up). So the figures
   against the targets are of the requests *started while the send ran* (create to done), from
   each request's own record (``BENCH_TIMELINE``); Locust's figures for the whole load run,
   burst included, are printed beside them.

Locust runs on the same 2 cores: its CPU share and the API's are printed beside every run.
Results are printed; benchmarks/bench_api.txt keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_api_requests import API_KEY, bench_settings, prepare  # noqa: E402
from bench_send import system_run  # noqa: E402
from sales_queries import QUERIES  # noqa: E402

from bulkmail.shared.db import Database  # noqa: E402
from bulkmail.shared.models import EmailTemplate  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.e2e.processes import Service, service_env  # noqa: E402
from tests.mail_servers import start_smtp_sink  # noqa: E402

LOCUSTFILE = ROOT / "benchmarks" / "locustfile_api.py"
TYPES = ["search first page", "search next page", "open lead", "preview"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process (and its reaped children) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICKS


@dataclass
class LoadResult:
    seconds: float
    stats: list[dict[str, Any]]
    locust_cpu: float
    api_cpu: float
    timeline: Path

    def lines(self, label: str) -> list[str]:
        total = sum(s["num_requests"] for s in self.stats)
        failures = sum(s["num_failures"] for s in self.stats)
        out = [
            f"{label}: {total:,} requests in {self.seconds:.1f} s = {total / self.seconds:,.0f} req/s, "
            f"{failures} errors; CPU over the run: API process {self.api_cpu / self.seconds:.0%}, "
            f"Locust {self.locust_cpu / self.seconds:.0%} (of one core; 2 cores = 200%)"
        ]
        for name in TYPES:
            entry = next((s for s in self.stats if s["name"] == name), None)
            if entry is None:
                continue
            p50, p95, p99 = (percentile(entry["response_times"], q) for q in (0.5, 0.95, 0.99))
            out.append(
                f"  {name:<18} {entry['num_requests']:>7,} req  p50 {p50:>6.0f} ms  p95 {p95:>6.0f} ms  "
                f"p99 {p99:>6.0f} ms  max {entry['max_response_time']:>6.0f} ms  errors {entry['num_failures']}"
            )
        return out


def window_lines(timeline: Path, start: float, end: float, label: str) -> list[str]:
    """Per request type, the requests whose start (epoch s) falls in [start, end]: nearest-rank
    percentiles of their exact times (Locust's own histogram rounds to two significant digits)."""
    times: dict[str, list[float]] = {name: [] for name in TYPES}
    failed: dict[str, int] = dict.fromkeys(TYPES, 0)
    for line in timeline.read_text().splitlines():
        started, ms, error, name = line.split(" ", 3)
        if start <= float(started) <= end and name in times:
            times[name].append(float(ms))
            failed[name] += int(error)
    total = sum(len(t) for t in times.values())
    out = [f"{label}: {total:,} requests in {end - start:.1f} s = {total / (end - start):,.0f} req/s, "
           f"{sum(failed.values())} errors"]  # fmt: skip
    for name, found in times.items():
        if not found:
            continue
        found.sort()
        p50, p95, p99 = (found[max(0, math.ceil(q * len(found)) - 1)] for q in (0.5, 0.95, 0.99))
        out.append(
            f"  {name:<18} {len(found):>7,} req  p50 {p50:>6.0f} ms  p95 {p95:>6.0f} ms  "
            f"p99 {p99:>6.0f} ms  max {found[-1]:>6.0f} ms  errors {failed[name]}"
        )
    return out


def percentile(response_times: dict[str, int], q: float) -> float:
    """From Locust's histogram of response times (ms, rounded as Locust rounds them)."""
    points = sorted((float(ms), n) for ms, n in response_times.items())
    total = sum(n for _, n in points)
    seen = 0
    for ms, n in points:
        seen += n
        if seen >= q * total:
            return ms
    return points[-1][0] if points else 0.0


class LocustLoad:
    """Locust headless against the API process; start() and stop() bracket the measured run."""

    def __init__(self, host: str, api_pid: int, users: int, wait: str, env: dict[str, str], workdir: Path) -> None:
        self.host, self.api_pid, self.users, self.wait = host, api_pid, users, wait
        self.env, self.workdir = env, workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.json_path = workdir / f"locust-{time.monotonic_ns()}.json"
        self.timeline = self.json_path.with_suffix(".timeline")

    async def start(self, warm_up: float = 5.0) -> None:
        """Locust started, its users spawned and running (Python and gevent take seconds to start)."""
        self._spawn()
        self.started = time.perf_counter()
        self.api_cpu0 = cpu_seconds(self.api_pid)
        await asyncio.sleep(warm_up)

    def _spawn(self) -> None:
        locust = Path(sys.executable).with_name("locust")
        command = [
            str(locust), "-f", str(LOCUSTFILE), "--headless", "-u", str(self.users), "-r", str(self.users),
            "--host", self.host, "--json-file", str(self.json_path.with_suffix("")), "--loglevel", "WARNING",
            "--only-summary",
        ]  # fmt: skip
        env = {**self.env, "BENCH_WAIT": self.wait, "BENCH_TIMELINE": str(self.timeline)}
        log = open(self.workdir / "locust.log", "ab")  # noqa: SIM115 - the child's output, kept open while it runs
        self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def stop(self) -> LoadResult:
        assert self.proc is not None
        seconds = time.perf_counter() - self.started
        api_cpu = cpu_seconds(self.api_pid) - self.api_cpu0
        locust_cpu = cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)  # Locust writes its JSON report as it shuts down
        await asyncio.to_thread(self.proc.wait, 60)
        stats = json.loads(self.json_path.read_text())
        self.result = LoadResult(seconds, stats, locust_cpu, api_cpu, self.timeline)
        return self.result

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


async def run_for(load: LocustLoad, seconds: float) -> LoadResult:
    await load.start(warm_up=0)
    try:
        await asyncio.sleep(seconds)
        return await load.stop()
    finally:
        load.kill()


async def check_queries(host: str) -> None:
    """Every query of the locustfile answers 200 before anything is timed."""
    async with httpx.AsyncClient(base_url=host, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        for query in QUERIES:
            answer = await client.get("/api/v1/lead/", params={"query": query, "_limit": 25})
            if answer.status_code != 200:
                raise SystemExit(f"locustfile query {query!r}: {answer.status_code} {answer.text[:300]}")


async def wait_until_up(host: str, api: Service) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=host, timeout=1) as client:
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start within 60 s:\n" + api.log()[-2000:])
            await asyncio.sleep(0.2)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main(args: argparse.Namespace) -> None:
    lead_ids = await prepare(args.leads)
    settings = bench_settings()
    database = Database(settings)
    async with database.session() as session:
        template_id = await session.scalar(select(EmailTemplate.id).order_by(EmailTemplate.id).limit(1))
    await database.dispose()
    port = free_port()
    lines = [f"machine: {os.cpu_count()} cores; {len(lead_ids):,} leads; load average at start {load_average()}"]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        workdir = Path(tmp)
        api = Service("query-api", service_env(settings, BULKMAIL_PORT=str(port)), workdir).start()
        host = f"http://127.0.0.1:{port}"
        locust_env = {
            **os.environ,
            "BENCH_API_KEY": API_KEY,
            "BENCH_LEAD_IDS": f"{lead_ids[0]}-{lead_ids[-1]}",
            "BENCH_TEMPLATE_ID": str(template_id),
        }
        try:
            await wait_until_up(host, api)
            assert api.proc is not None
            await check_queries(host)
            if args.idle_seconds:
                idle = LocustLoad(host, api.proc.pid, args.users, "0-0", locust_env, workdir)
                result = await run_for(idle, args.idle_seconds)
                lines += result.lines(f"idle, {args.users} users without think time (load average {load_average()})")
                print("\n".join(lines), flush=True)
            if not args.skip_send:
                lines += await sends(args, host, api.proc.pid, locust_env, workdir)
        finally:
            api.stop()
            if args.show_logs:
                print(api.log()[-3000:])
    print("\n".join(lines))


async def sends(
    args: argparse.Namespace, host: str, api_pid: int, locust_env: dict[str, str], workdir: Path
) -> list[str]:
    """The same send alone and under the load, into one smtp-sink."""
    send_args = argparse.Namespace(
        recipients=args.recipients, mailers=2, connections=10, timeout=900, show_logs=args.show_logs, profile=None
    )
    lines: list[str] = []
    sink = start_smtp_sink()
    try:
        alone = await system_run(send_args, sink.port, workdir)
        lines.append(
            f"send alone: {int(alone['sent']):,} recipients create→done in {alone['elapsed']:.1f} s "
            f"= {alone['sent'] / alone['elapsed']:,.0f} msg/s (load average {load_average()})"
        )
        print(lines[-1], flush=True)
        load = LocustLoad(host, api_pid, args.users, args.send_wait, locust_env, workdir)
        try:
            loaded = await system_run(send_args, sink.port, workdir, load=load)
        finally:
            load.kill()
    finally:
        sink.stop()
    rate_alone = alone["sent"] / alone["elapsed"]
    rate_loaded = loaded["sent"] / loaded["elapsed"]
    lines.append(
        f"send under load: {int(loaded['sent']):,} recipients create→done in {loaded['elapsed']:.1f} s "
        f"= {rate_loaded:,.0f} msg/s (load average {load_average()})"
    )
    lines.append(f"send rate drop under the load: {1 - rate_loaded / rate_alone:.0%}")
    window = (loaded["wall_started"], loaded["wall_started"] + loaded["elapsed"])
    label = (
        f"during the send (requests started between create and done), {args.users} users, think time {args.send_wait} s"
    )
    lines += window_lines(load.result.timeline, *window, label)
    label = "the whole load run (Locust's figures: a 5 s warm-up, its 50 simultaneous first requests, then the send)"
    lines += load.result.lines(label)
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=60, help="0: skip the idle run")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--send-wait", default="0.5-2", help="the users' think time during the send, min-max s")
    parser.add_argument("--skip-send", action="store_true", help="only the idle run")
    parser.add_argument("--show-logs", type=int, default=0, metavar="N")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
