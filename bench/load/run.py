"""The load benchmark: the portal under a realistic mix of readers, at and beyond its capacity.

    .venv/bin/python -m bench.load.run --clients 50 --seconds 30       # the everyday target
    .venv/bin/python -m bench.load.run --clients 200 --seconds 60      # overload: fast 503s, never a stall
    .venv/bin/python -m bench.load.run --code ../imagingx-before ...    # the same against another checkout
    .venv/bin/python -m bench.load.run --url http://127.0.0.1:8000 ... # against a portal already running

Without --url it creates (once) the database `bench_load` on the PostgreSQL of --admin-url, migrates it, loads
the shipped seed catalog, and starts the web process with exactly the command `imagingx serve` uses
(app.stack.web_argv), on a free loopback port; Redis from --redis-url. Only 127.0.0.1 is contacted.

Each client is a closed loop with no think time: it sends one request, waits for the answer, sends the next,
over one keep-alive connection (a browser tab that clicks as fast as pages arrive). Requests follow the mix of
MIX: JSON searches with random facet combinations and words from the catalog, facet counts, dataset pages (any
of the catalog's datasets), statistics and HTML searches (half of them htmx facet clicks). The choices come from
a seeded generator, so two runs send the same sequence. With --with-selection every client carries a selection's
cookie, as a visitor who has put datasets aside does: pages are then rendered for that visitor. A request with no answer within --timeout seconds counts
as an error. The run ends after --seconds; requests still in flight then are awaited (up to --timeout) and
counted.

The report: throughput, latency percentiles of all answers and of the successful ones, answers by status, how
many took over 2 s, the slowest 503, and the client's own CPU time (the client shares the machine's cores with
the server). `--json FILE` writes it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "bench" / ".data" / "logs"

# The realistic mix: share of requests per kind (from the issue that set the targets).
MIX = {"search_api": 35, "facets_api": 15, "dataset_page": 20, "statistics": 5, "search_html": 25}
FACETS_TO_COMBINE = ("modality", "anatomy", "task", "dim", "access", "host", "year", "labeled")
SLOW_SECONDS = 2.0


# -- what to ask ------------------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """What the generator draws from, read from the portal itself before the run."""

    slugs: list[str]
    facet_values: dict[str, list[str]]
    words: list[str]


def read_catalog(base: str) -> Catalog:
    with httpx.Client(base_url=base, timeout=60) as client:
        body = client.get("/api/v1/facets", params={"_facet_size": "max"}).json()
        # {ok, facets} since the envelope had no exceptions; a bare list from a baseline checkout before that
        facets = body["facets"] if isinstance(body, dict) else body
        facet_values = {
            f["name"]: [row["value"] for row in f["results"] if row["count"]]
            for f in facets
            if f["name"] in FACETS_TO_COMBINE
        }
        slugs: list[str] = []
        words: set[str] = set()
        url: str | None = "/api/v1/datasets?page_size=200"
        while url:
            page = client.get(url).json()
            for row in page["results"]:
                slugs.append(row["slug"])
                words.update(w.lower() for w in row["name"].replace("-", " ").split() if len(w) > 3)
            url = page.get("next_url")
    return Catalog(slugs=slugs, facet_values=facet_values, words=sorted(words))


def random_filter(rng: random.Random, catalog: Catalog) -> list[tuple[str, str]]:
    """0-2 facet values and, one time in three, a word from a dataset name."""
    params: list[tuple[str, str]] = []
    for name in rng.sample(FACETS_TO_COMBINE, rng.choice((0, 1, 1, 2, 2))):
        values = catalog.facet_values.get(name)
        if values:
            params.append((name, rng.choice(values)))
    if rng.random() < 1 / 3 and catalog.words:
        params.append(("q", rng.choice(catalog.words)))
    return params


def create_selection(base: str, catalog: Catalog) -> str:
    """A selection of three datasets; its owner cookie makes every page personal (no shared page cache)."""
    with httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/api/v1/selections", json={"dataset_slugs": catalog.slugs[:3]})
        answer.raise_for_status()
        return answer.json()["id"]


def next_request(
    rng: random.Random, catalog: Catalog, cookie: str | None = None
) -> tuple[str, str, dict[str, str]]:
    """(kind, path with query, extra headers) of the next request."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    headers: dict[str, str] = {"Cookie": f"imagingx_selection={cookie}"} if cookie else {}
    if kind == "dataset_page":
        return kind, f"/datasets/{quote(rng.choice(catalog.slugs))}", headers
    if kind == "statistics":
        return kind, rng.choice(("/statistics", "/api/v1/statistics")), headers
    query = urlencode(random_filter(rng, catalog))
    path = {"search_api": "/api/v1/datasets", "facets_api": "/api/v1/facets", "search_html": "/datasets"}[
        kind
    ]
    if kind == "search_html" and rng.random() < 0.5:
        headers["HX-Request"] = "true"  # a facet click: the page's region only
    return kind, path + (f"?{query}" if query else ""), headers


# -- a lean HTTP/1.1 client (the generator must cost the shared cores as little as possible) --------------------
class Connection:
    """One keep-alive connection; reconnects after the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], int]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = await self.reader.readuntil(b"\r\n")
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        head: dict[str, str] = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            head[name.strip().lower()] = value.strip()
        size = 0
        if "content-length" in head:
            size = int(head["content-length"])
            await self.reader.readexactly(size)
        elif head.get("transfer-encoding") == "chunked":
            while (chunk := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
                await self.reader.readexactly(chunk + 2)
                size += chunk
            await self.reader.readuntil(b"\r\n")
        if head.get("connection") == "close":
            self.close()
        return status, head, size

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Sample:
    kind: str
    status: int  # 0: no answer (timeout or connection error)
    seconds: float
    retry_after: str | None = None
    repeat: bool = False  # the same URL (and headers) was sent before, in this run or its warm-up


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: set[str] = field(default_factory=set)  # URLs (with htmx header) sent so far, warm-up included


async def client_loop(
    number: int,
    base: str,
    catalog: Catalog,
    seed: int,
    deadline: float,
    timeout: float,
    run: Run,
    cookie: str | None,
) -> None:
    rng = random.Random(seed * 1_000_003 + number)
    parts = urlsplit(base)
    connection = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
    while time.monotonic() < deadline:
        kind, path, headers = next_request(rng, catalog, cookie)
        seen = path + str(headers)
        repeat = seen in run.sent
        run.sent.add(seen)
        started = time.monotonic()
        try:
            status, head, _ = await asyncio.wait_for(connection.request(path, headers), timeout)
            elapsed = time.monotonic() - started
            run.samples.append(Sample(kind, status, elapsed, head.get("retry-after"), repeat))
            if status == 503:
                # a well-behaved client honours Retry-After (capped so the run keeps its pace)
                await asyncio.sleep(min(float(head.get("retry-after") or 1), 1.0))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            connection.close()
            run.errors[type(error).__name__] += 1
            run.samples.append(Sample(kind, 0, time.monotonic() - started, None, repeat))
    connection.close()


async def drive(
    base: str,
    catalog: Catalog,
    clients: int,
    seconds: float,
    timeout: float,
    seed: int,
    sent: set[str],
    cookie: str | None = None,
) -> Run:
    run = Run(sent=sent)
    deadline = time.monotonic() + seconds
    tasks = [client_loop(n, base, catalog, seed, deadline, timeout, run, cookie) for n in range(clients)]
    await asyncio.gather(*tasks)
    return run


# -- the report ---------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(run: Run, clients: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    samples = run.samples
    ok = [s.seconds for s in samples if 200 <= s.status < 400]
    refused = [s.seconds for s in samples if s.status == 503]
    statuses = Counter(str(s.status) for s in samples)
    errors = sum(1 for s in samples if s.status == 0 or (s.status >= 400 and s.status != 503))
    by_kind = {}
    for kind in MIX:
        mine = [s.seconds for s in samples if s.kind == kind and 200 <= s.status < 400]
        by_kind[kind] = {
            "ok": len(mine),
            "p50_ms": round(percentile(mine, 0.5) * 1000, 1),
            "p95_ms": round(percentile(mine, 0.95) * 1000, 1),
        }
    every = [s.seconds for s in samples]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(samples),
        "answered_per_second": round(len(ok) / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "errors": errors,
        "error_kinds": dict(run.errors),
        "fast_503": sum(1 for t in refused if t <= 1.0),
        "slowest_503_ms": round(max(refused) * 1000, 1) if refused else None,
        "over_2s": sum(1 for t in every if t > SLOW_SECONDS),
        "all_p50_ms": round(percentile(every, 0.5) * 1000, 1),
        "all_p95_ms": round(percentile(every, 0.95) * 1000, 1),
        "all_max_ms": round(max(every) * 1000, 1) if every else None,
        "ok_p50_ms": round(percentile(ok, 0.5) * 1000, 1),
        "ok_p95_ms": round(percentile(ok, 0.95) * 1000, 1),
        "ok_p99_ms": round(percentile(ok, 0.99) * 1000, 1),
        "by_kind": by_kind,
        "client_cpu_seconds": round(cpu_seconds, 1),
        # the most a cache of whole answers could serve: requests repeating an earlier URL
        "repeat_share": round(sum(s.repeat for s in samples) / len(samples), 3) if samples else None,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['clients']} clients, {report['seconds']:.0f} s: {report['requests']} requests, "
        f"{report['answered_per_second']} answered/s; statuses {report['statuses']}"
    )
    print(
        f"  errors (no answer, or 4xx/5xx other than 503): {report['errors']} {report['error_kinds'] or ''}; "
        f"503: {report['statuses'].get('503', 0)} (slowest {report['slowest_503_ms']} ms); "
        f"over 2 s: {report['over_2s']}"
    )
    print(
        f"  all answers: p50 {report['all_p50_ms']} ms, p95 {report['all_p95_ms']} ms, max {report['all_max_ms']} ms"
    )
    print(
        f"  successful:  p50 {report['ok_p50_ms']} ms, p95 {report['ok_p95_ms']} ms, p99 {report['ok_p99_ms']} ms"
    )
    for kind, row in report["by_kind"].items():
        print(f"    {kind:<13} {row['ok']:>6} ok  p50 {row['p50_ms']:>7} ms  p95 {row['p95_ms']:>7} ms")
    print(
        f"  load generator CPU: {report['client_cpu_seconds']} s; requests repeating an earlier URL: "
        f"{100 * (report['repeat_share'] or 0):.0f} %"
    )


# -- the server under test ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare_database(admin_url: str, name: str, code: Path = REPO) -> str:
    """Create `name` beside admin_url's database once; migrate it with `code` (the checkout whose web process
    will read it) and load the seed catalog if empty."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=code, env=env, check=True)
    subprocess.run(
        [sys.executable, "-m", "app.cli", "catalog", "seed"],
        cwd=code,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return url


def start_server(code: Path, database_url: str, redis_url: str, env_extra: dict[str, str]) -> tuple[Any, str]:
    from app.stack import web_argv

    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = (LOG_DIR / f"load-web-{port}.log").open("w")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(code),
        "IMAGINGX_LOG_LEVEL": "warning",
        **env_extra,
    }
    process = subprocess.Popen(
        web_argv("127.0.0.1", port),
        cwd=code,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the web process exited; see {log.name}")
        try:
            if httpx.get(f"{base}/api/v1/openapi.json", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the web process did not answer within 60 s")


def stop_server(process: Any) -> None:
    """Stop a web process `start_server` started, with its workers (its own process group)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds of 10 clients before measuring (a portal in use)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="a request unanswered this long is an error"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--url", help="a running portal (default: start one)")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose web process to start")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_load")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the web process")
    parser.add_argument(
        "--with-selection",
        action="store_true",
        help="every client sends a selection's cookie: pages are personal, the shared page cache never serves",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    # many sockets at once: lift the soft limit on open files to the hard one
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    process = None
    base = args.url
    if base is None:
        database_url = prepare_database(args.admin_url, args.database, args.code.resolve())
        extra = dict(item.split("=", 1) for item in args.env)
        process, base = start_server(args.code.resolve(), database_url, args.redis_url, extra)
    try:
        catalog = read_catalog(base)
        print(f"{base}: {len(catalog.slugs)} datasets, {len(catalog.words)} words to search for")
        sent: set[str] = set()
        cookie = create_selection(base, catalog) if args.with_selection else None
        if args.warmup:
            asyncio.run(drive(base, catalog, 10, args.warmup, args.timeout, args.seed + 1, sent, cookie))
        before = resource.getrusage(resource.RUSAGE_SELF)
        run = asyncio.run(
            drive(base, catalog, args.clients, args.seconds, args.timeout, args.seed, sent, cookie)
        )
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        report = summarise(run, args.clients, args.seconds, cpu)
        report["code"] = str(args.code)
        report["with_selection"] = bool(cookie)
        print_report(report)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if process is not None:
            stop_server(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
