"""The search benchmark: our API with all facets vs a linear scan in Python vs Datasette, at several sizes.

    .venv/bin/python -m bench.search.run                      # real, 100k and 1M (builds data if missing)
    .venv/bin/python -m bench.search.run --sizes real,100k    # a quicker rerun
    .venv/bin/python -m bench.search.run --sizes real --systems api --reps 20

For each size it builds or reuses the data (bench/search/synth.py; cached in bench/.data/ and bench_<n>),
then for each system runs the fixed query mix below: warm-up, then `reps` sequential rounds over the mix
(round-robin, so every query sees the same conditions), then a throughput run with concurrent clients.
Every loop is bounded by a count and a time budget. Results go to bench/results/<timestamp>.json and the
tables of the sizes that ran are rewritten in bench/README.md (between the `bench:size` markers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

from app.search.filters import parse_filter
from app.search.schemas import FACETS, SearchFilter, Sort
from bench.search import linear
from bench.search.synth import DEFAULT_SEED, SOURCE_URL, DataPaths, ensure_data, parse_size, size_label

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "bench"
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = BENCH_DIR / ".data" / "logs"
README = BENCH_DIR / "README.md"
PYTHON = sys.executable


# -- the query mix ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    name: str
    params: tuple[tuple[str, str], ...]
    pages: int = 0  # follow next_url this many times first and time the page reached (a deep page)

    @property
    def label(self) -> str:
        text = urlencode(self.params)
        return f"{text} (page {self.pages + 1} via next_url)" if self.pages else (text or "(no filter)")


QUERIES = [
    Query("all", ()),
    Query("mr", (("modality", "MR"),)),
    Query("ct_abdomen", (("modality", "CT"), ("anatomy", "abdomen"))),
    Query("chest_xray_cls", (("anatomy", "chest"), ("modality", "xray"), ("task", "cls"))),
    Query(
        "3d_seg_labeled_2018", (("dim", "3D"), ("task", "seg"), ("labeled", "true"), ("year__gte", "2018"))
    ),
    Query("text_liver", (("q", "liver"),)),
    Query("text_brain_tumor_mr", (("q", "brain tumor"), ("modality", "MRI"))),
    Query("open_by_images", (("access", "open"), ("sort", "images"))),
    Query(
        "seven_filters",
        (
            ("modality", "MR"),
            ("anatomy", "brain"),
            ("dim", "3D"),
            ("task", "seg"),
            ("access", "open"),
            ("labeled", "true"),
            ("year__gte", "2015"),
        ),
    ),
    Query(
        "or_ct_mr_tcia", (("modality", "CT"), ("modality", "MR"), ("host", "tcia"), ("images__gte", "100"))
    ),
    Query("deep_page_ct", (("modality", "CT"),), pages=4),
]

DATASETTE_FACETS = [
    ("_facet_array", "modalities"), ("_facet_array", "anatomy_closure"), ("_facet_array", "tasks"),
    ("_facet_array", "dims"), ("_facet", "access"), ("_facet", "labeled"), ("_facet", "host"),
    ("_facet", "year"), ("_facet", "size_bucket"), ("_facet", "licence"), ("_facet_array", "quality_flags"),
]  # fmt: skip


def search_filter(query: Query) -> SearchFilter:
    """The query as our API reads it (synonyms resolved): the baselines are given the canonical values."""
    return parse_filter(query.params)


def api_path(query: Query) -> str:
    return "/api/v1/datasets" + ("?" + urlencode(query.params) if query.params else "")


def datasette_path(query: Query) -> str:
    """The same filter in Datasette's URL language, asking for all eleven facets."""
    f = search_filter(query)
    params: list[tuple[str, str]] = []
    for name, values in f.terms.items():
        spec = FACETS[name]
        column = spec.column
        if spec.multi:
            if len(values) == 1:
                params.append((f"{column}__arraycontains", values[0]))
            else:  # Datasette has no OR over an array column: a _where clause does it
                listed = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
                params.append(
                    (
                        "_where",
                        f"exists (select 1 from json_each(datasets.{column}) where value in ({listed}))",
                    )
                )
        else:
            converted = [{"true": "1", "false": "0"}.get(v, v) if name == "labeled" else v for v in values]
            if converted == ["unknown"]:
                params.append((f"{column}__isnull", "1"))
            elif len(converted) == 1:
                params.append((f"{column}__exact", converted[0]))
            else:
                params.append((f"{column}__in", ",".join(converted)))
    for name, bounds in f.ranges.items():
        for op, value in (("gte", bounds.gte), ("lte", bounds.lte)):
            if value is not None:
                params.append((f"{name}__{op}", str(value)))
    if f.q:
        params.append(("_search", f.q))
    if f.sort == Sort.images:
        params.append(("_sort_desc", "images"))
    elif f.sort == Sort.year:
        params.append(("_sort_desc", "year"))
    elif f.sort == Sort.name:
        params.append(("_sort", "name"))
    params += DATASETTE_FACETS
    params.append(("_size", "25"))
    return "/bench/datasets.json?" + urlencode(params)


# -- statistics ---------------------------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": _r(percentile(values, 50)),
        "p95_ms": _r(percentile(values, 95)),
        "max_ms": _r(max(values) if values else None),
        "mean_ms": _r(statistics.fmean(values) if values else None),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- servers ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process we started (in its own process group, so stopping it stops its children too)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, health_path: str) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = LOG_DIR / f"{name}-{port}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.health_path = health_path

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                if httpx.get(self.base + self.health_path, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout} s; see {self.log_path}")

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def code_state() -> str:
    """The commit the servers import, plus a mark when app/ has uncommitted changes (people commit mid-run)."""

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=REPO).stdout.strip()

    dirty = git("status", "--short", "--", "app")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted app/ changes" if dirty else "")


def start_api(database_url: str, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(REPO), **(extra_env or {})}
    argv = [
        PYTHON, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    server = Server("api", argv, env, port, "/api/v1/openapi.json")
    server.wait_ready()
    return server


DATASETTE_SETTINGS = {
    "sql_time_limit_ms": "120000",
    "facet_time_limit_ms": "120000",
    "max_returned_rows": "1000",
    "suggest_facets": "off",
    "default_facet_size": "30",
}


def start_datasette(paths: DataPaths) -> Server:
    port = free_port()
    metadata = paths.dir / "datasette-metadata.json"
    metadata.write_text(
        json.dumps(
            {"databases": {"bench": {"tables": {"datasets": {"fts_table": "datasets_fts", "fts_pk": "id"}}}}}
        )
    )
    argv = [
        str(Path(PYTHON).with_name("datasette")), "serve", "-i", str(paths.sqlite_path),
        "--host", "127.0.0.1", "--port", str(port), "--metadata", str(metadata),
    ]  # fmt: skip
    for key, value in DATASETTE_SETTINGS.items():
        argv += ["--setting", key, value]
    server = Server("datasette", argv, dict(os.environ), port, "/-/versions.json")
    server.wait_ready()
    return server


# -- measuring over HTTP -------------------------------------------------------------------------------------------
@dataclass
class HttpSystem:
    name: str
    base: str
    path_of: Callable[[Query], str]
    # reads (result count, {facet: {value: count}}, timed-out facets) from a response body
    read: Callable[[dict[str, Any]], tuple[int | None, dict[str, dict[str, int]], list[str]]]
    timeout_s: float
    urls: dict[str, str] = field(default_factory=dict)
    # the server's own account of its time, read from the body after the clock stopped (our API: timing_ms)
    server_ms: Callable[[dict[str, Any]], float | None] | None = None


def read_api(body: dict[str, Any]) -> tuple[int | None, dict[str, dict[str, int]], list[str]]:
    facets = {f["name"]: {v["value"]: v["count"] for v in f["results"]} for f in body["facets"]}
    return body["count"], facets, []


def read_datasette(body: dict[str, Any]) -> tuple[int | None, dict[str, dict[str, int]], list[str]]:
    got = body.get("facet_results", {})
    facets = {k: {str(v["value"]): v["count"] for v in f["results"]} for k, f in got.items()}
    missing = [column for _, column in DATASETTE_FACETS if column not in got]
    return body.get("filtered_table_rows_count"), facets, missing


def resolve_urls(
    system: HttpSystem, client: httpx.Client, log: Callable[[str], None], failures: dict[str, str]
) -> dict[str, float]:
    """The URL each query times (deep pages: follow next_url); returns each query's first-call latency and
    puts the first calls that failed into `failures` (they are warm-up, not timed, but a user would see them)."""
    first: dict[str, float] = {}
    for query in QUERIES:
        url = system.base + system.path_of(query)
        started = time.perf_counter()
        for _ in range(query.pages):
            response = client.get(url)
            response.raise_for_status()
            next_url = response.json()["next_url"]
            if not next_url:
                raise RuntimeError(f"{system.name}: {query.name} has no page {query.pages + 1}")
            url = next_url if next_url.startswith("http") else system.base + next_url
        response = client.get(url)
        first[query.name] = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            log(f"  {system.name} {query.name}: HTTP {response.status_code} {response.text[:300]}")
            failures[query.name] = (
                f"HTTP {response.status_code} after {first[query.name]:,.0f} ms: {response.text[:200]}"
            )
        system.urls[query.name] = url
    return first


def measure_http(
    system: HttpSystem, reps: int, budget_s: float, log: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {"per_query": {}, "budget_s": budget_s, "reps_requested": reps}
    started_all = time.monotonic()
    with httpx.Client(timeout=system.timeout_s) as client:
        failures: dict[str, str] = {}
        out["first_call_ms"] = {
            k: round(v, 1) for k, v in resolve_urls(system, client, log, failures).items()
        }
        out["first_call_failures"] = failures
        latencies: dict[str, list[float]] = {q.name: [] for q in QUERIES}
        errors: dict[str, list[str]] = {q.name: [] for q in QUERIES}
        checks: dict[str, Any] = {}
        server_side: list[float] = []
        overhead: list[float] = []
        truncated = False
        for rep in range(reps):
            for query in QUERIES:
                if time.monotonic() - started_all > budget_s:
                    truncated = True
                    break
                url = system.urls[query.name]
                t0 = time.perf_counter()
                try:
                    response = client.get(url)
                    elapsed = (time.perf_counter() - t0) * 1000
                except httpx.HTTPError as exc:
                    errors[query.name].append(f"{type(exc).__name__} after {time.perf_counter() - t0:.1f} s")
                    continue
                if response.status_code != 200:
                    errors[query.name].append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                latencies[query.name].append(elapsed)
                if system.server_ms is not None:
                    inside = system.server_ms(response.json())
                    if inside is not None:
                        server_side.append(inside)
                        overhead.append(elapsed - inside)
                if query.name not in checks:
                    count, facets, timed_out = system.read(response.json())
                    checks[query.name] = {"count": count, "facets": facets, "timed_out_facets": timed_out}
            if truncated:
                log(f"  {system.name}: time budget of {budget_s:.0f} s reached during round {rep + 1}")
                break
    out["truncated_by_budget"] = truncated
    out["elapsed_s"] = round(time.monotonic() - started_all, 1)
    for query in QUERIES:
        out["per_query"][query.name] = {
            **summary(latencies[query.name]),
            "errors": errors[query.name][:5],
            "error_count": len(errors[query.name]),
            "count": checks.get(query.name, {}).get("count"),
            "timed_out_facets": checks.get(query.name, {}).get("timed_out_facets", []),
        }
    out["overall"] = summary([v for values in latencies.values() for v in values])
    if server_side:
        out["server_side"] = summary(server_side)
        out["outside_server_timing"] = summary(overhead)
    out["checks"] = checks
    return out


def measure_throughput(system: HttpSystem, clients: int, total: int, budget_s: float) -> dict[str, Any]:
    """`clients` concurrent sequential clients share `total` requests, cycling through the query mix."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    names = [q.name for q in QUERIES]
    started = time.monotonic()

    def worker() -> None:
        with httpx.Client(timeout=system.timeout_s) as client:
            while True:
                with lock:
                    i = next(counter)
                if i >= total or time.monotonic() - started > budget_s:
                    return
                t0 = time.perf_counter()
                try:
                    response = client.get(system.urls[names[i % len(names)]])
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, response = False, exc
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(str(response)[:200]))

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(worker)
    wall = time.monotonic() - started
    return {
        "clients": clients,
        "requested": total,
        "completed": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2) if wall else None,
        "truncated_by_budget": len(latencies) + len(errors) < total,
        "latency_under_load": summary(latencies),
    }


# -- our API ---------------------------------------------------------------------------------------------------------
def index_build_in_process(database_url: str) -> dict[str, float]:
    """Time the two halves of a search-index build (the SQL read and the bitmap construction) in this process."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from app.core.db import normalise_url
    from app.search.index import _LOAD_SQL, CatalogIndex

    engine = create_engine(normalise_url(database_url))
    try:
        with Session(engine) as session:
            t0 = time.perf_counter()
            rows = session.execute(_LOAD_SQL).all()
            t1 = time.perf_counter()
            index = CatalogIndex(0, rows)
            t2 = time.perf_counter()
            memory = sum(b.matrix.nbytes for b in index.facets.values())
            del rows, index
    finally:
        engine.dispose()
    return {
        "sql_read_s": round(t1 - t0, 2),
        "build_s": round(t2 - t1, 2),
        "bitmaps_mb": round(memory / 2**20, 2),
    }


# used only when the API cannot start with its default settings (the error is reported first)
FALLBACK_ENV = {"IMAGINGX_QUERY_TIMEOUT_MS": "120000"}


def run_api(paths: DataPaths, plan: SizePlan, log: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "index_in_process": index_build_in_process(paths.database_url),
        "env": {},
        "code": code_state(),
    }
    log(f"  index build in-process: {result['index_in_process']}")
    server = start_api(paths.database_url)
    try:
        t0 = time.perf_counter()
        cold = httpx.get(server.base + "/api/v1/datasets?page_size=1", timeout=600)
        result["cold_first_request_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        result["cold_status"] = cold.status_code
        log(
            f"  cold first request (builds the index): {result['cold_first_request_ms']} ms, HTTP {cold.status_code}"
        )
        if cold.status_code != 200:
            # report how the default settings fail, then measure search itself with the documented setting raised
            t0 = time.perf_counter()
            again = httpx.get(server.base + "/api/v1/datasets?page_size=1", timeout=600)
            result["default_settings_failure"] = {
                "first": {
                    "status": cold.status_code,
                    "ms": result["cold_first_request_ms"],
                    "body": cold.text[:300],
                },
                "second": {
                    "status": again.status_code,
                    "ms": round((time.perf_counter() - t0) * 1000, 1),
                    "body": again.text[:300],
                },
                "server_log_tail": server.log_path.read_text()[-1500:],
            }
            log(
                f"  default settings fail: HTTP {cold.status_code} {cold.text[:200]}; retrying with {FALLBACK_ENV}"
            )
            server.stop()
            server = start_api(paths.database_url, FALLBACK_ENV)
            result["env"] = FALLBACK_ENV
            t0 = time.perf_counter()
            cold = httpx.get(server.base + "/api/v1/datasets?page_size=1", timeout=600)
            result["cold_first_request_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            result["cold_status"] = cold.status_code
            log(
                f"  cold first request with {FALLBACK_ENV}: {result['cold_first_request_ms']} ms, HTTP {cold.status_code}"
            )
        system = HttpSystem(
            "api", server.base, api_path, read_api, timeout_s=60, server_ms=lambda body: body.get("timing_ms")
        )
        result.update(measure_http(system, plan.api_reps, plan.api_budget_s, log))
        result["throughput"] = measure_throughput(
            system, plan.clients, plan.api_throughput, plan.api_budget_s
        )
        result["server_rss_mb"] = server.rss_mb()
    finally:
        server.stop()
    return result


def run_datasette(paths: DataPaths, plan: SizePlan, log: Callable[[str], None]) -> dict[str, Any]:
    server = start_datasette(paths)
    result: dict[str, Any] = {"settings": DATASETTE_SETTINGS}
    try:
        system = HttpSystem("datasette", server.base, datasette_path, read_datasette, timeout_s=300)
        result.update(measure_http(system, plan.datasette_reps, plan.datasette_budget_s, log))
        remaining = plan.datasette_budget_s - result["elapsed_s"]
        if remaining > 0:
            result["throughput"] = measure_throughput(
                system, plan.clients, plan.datasette_throughput, remaining
            )
        else:
            result["throughput"] = None
        result["server_rss_mb"] = server.rss_mb()
    finally:
        server.stop()
    return result


# -- baseline (a): linear scan -----------------------------------------------------------------------------------------
def run_linear(paths: DataPaths, plan: SizePlan, log: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    records = linear.load_records(paths.json_path)
    result: dict[str, Any] = {"json_load_s": round(time.perf_counter() - t0, 2)}
    latencies: dict[str, list[float]] = {q.name: [] for q in QUERIES}
    checks: dict[str, Any] = {}
    started = time.monotonic()
    truncated = False
    for rep in range(plan.linear_reps + 1):  # round 0 is the warm-up
        for query in QUERIES:
            if time.monotonic() - started > plan.linear_budget_s:
                truncated = True
                break
            f = search_filter(query)
            t = time.perf_counter()
            answer = linear.search(records, f, page_size=25, offset=25 * query.pages)
            elapsed = (time.perf_counter() - t) * 1000
            if rep == 0:
                checks[query.name] = {"count": answer["count"], "facets": answer["full_counts"]}
            else:
                latencies[query.name].append(elapsed)
        if truncated:
            log(f"  linear: time budget of {plan.linear_budget_s:.0f} s reached during round {rep}")
            break
    del records
    result["truncated_by_budget"] = truncated
    result["per_query"] = {
        q.name: {**summary(latencies[q.name]), "count": checks.get(q.name, {}).get("count")} for q in QUERIES
    }
    result["overall"] = summary([v for values in latencies.values() for v in values])
    total = sum(len(v) for v in latencies.values())
    spent = sum(sum(v) for v in latencies.values()) / 1000
    result["throughput"] = {"clients": 1, "requests_per_s": round(total / spent, 2) if spent else None}
    result["checks"] = checks
    return result


def compare_counts(size: dict[str, Any]) -> dict[str, Any]:
    """Do the systems agree? Result counts per query, and (api vs linear) every facet count the API shows."""
    systems = size["systems"]
    out: dict[str, Any] = {}
    for query in QUERIES:
        row: dict[str, Any] = {}
        for name, data in systems.items():
            row[name] = data.get("per_query", {}).get(query.name, {}).get("count")
        api_checks = systems.get("api", {}).get("checks", {}).get(query.name)
        lin_checks = systems.get("linear", {}).get("checks", {}).get(query.name)
        if api_checks and lin_checks:
            mismatches = [
                f"{facet}={value}: api {count} linear {lin_checks['facets'].get(facet, {}).get(value, 0)}"
                for facet, values in api_checks["facets"].items()
                for value, count in values.items()
                if lin_checks["facets"].get(facet, {}).get(value, 0) != count
            ]
            row["api_vs_linear_facet_mismatches"] = len(mismatches)
            row["mismatch_examples"] = mismatches[:5]
        out[query.name] = row
    return out


# -- plan, machine, README -------------------------------------------------------------------------------------------
@dataclass
class SizePlan:
    label: str
    n: int | None
    api_reps: int
    api_throughput: int
    api_budget_s: float
    datasette_reps: int
    datasette_throughput: int
    datasette_budget_s: float
    linear_reps: int
    linear_budget_s: float
    clients: int


def default_plan(n: int | None, args: argparse.Namespace) -> SizePlan:
    big = n is not None and n >= 500_000
    mid = n is not None and n >= 50_000
    plan = SizePlan(
        label=size_label(n),
        n=n,
        api_reps=10 if big else 30 if mid else 50,
        api_throughput=200 if big else 400 if mid else 1000,
        api_budget_s=600,
        datasette_reps=2 if big else 5 if mid else 30,
        datasette_throughput=8 if big else 40 if mid else 400,
        datasette_budget_s=args.datasette_budget_s or (1200 if big else 600 if mid else 300),
        linear_reps=2 if big else 5 if mid else 30,
        linear_budget_s=args.linear_budget_s or (600 if big else 300),
        clients=args.clients,
    )
    if args.reps:
        plan.api_reps = plan.datasette_reps = plan.linear_reps = args.reps
    return plan


def machine_facts() -> dict[str, Any]:
    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
        except OSError:
            return ""

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "?",
    )  # fmt: skip
    mem = next(
        (int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal")),
        0,
    )  # fmt: skip
    with psycopg.connect(SOURCE_URL.rsplit("/", 1)[0] + "/postgres") as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    import sqlite3

    import datasette
    import numpy

    dirty = run(["git", "status", "--short", "--", "app"])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem,
        "python": platform.python_version(),
        "postgres": pg,
        "sqlite": sqlite3.sqlite_version,
        "datasette": datasette.__version__
        if hasattr(datasette, "__version__")
        else run([str(Path(PYTHON).with_name("datasette")), "--version"]),
        "numpy": numpy.__version__,
        "git_commit": run(["git", "rev-parse", "--short", "HEAD"]),
        "app_uncommitted_changes": dirty.splitlines(),
    }


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}{unit}"
        return f"{value:.1f}{unit}" if value >= 10 else f"{value:.2f}{unit}"
    return f"{value}{unit}"


TARGETS_MS = {"real": 20, "100000": 100}


def render_size(results: dict[str, Any], label: str) -> str:
    size = results["sizes"][label]
    n = size["n"]
    lines = [
        f"<!-- bench:size {label} start -->",
        f"### {n:,} datasets ({'the real catalog' if label == 'real' else 'synthetic'})",
        "",
    ]
    lines.append(
        f"Run {results['started_at']} · `{results['command']}` · {results['machine']['nproc']} cores, "
        f"Python {results['machine']['python']}, PostgreSQL {results['machine']['postgres']}, "
        f"SQLite {results['machine']['sqlite']}, Datasette {results['machine']['datasette']}, "
        f"our API measured on commit {size['systems'].get('api', {}).get('code') or size.get('git_commit')}"
    )
    lines.append("")
    lines.append(
        "| system | p50 ms | p95 ms | max ms | requests timed | throughput req/s (clients) | notes |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    target = TARGETS_MS.get(label)
    for name, title in (("api", "our API (HTTP, all 11 facets)"), ("datasette", "Datasette (HTTP, 11 facets)"),
                        ("linear", "linear scan in Python (in-process)")):  # fmt: skip
        data = size["systems"].get(name)
        if not data:
            continue
        overall = data["overall"]
        tp = data.get("throughput") or {}
        notes = []
        if name == "api" and data.get("default_settings_failure"):
            failure = data["default_settings_failure"]["first"]
            notes.append(
                f"**with default settings every search failed (HTTP {failure['status']}, see below)**; "
                f"measured with {', '.join(f'{k}={v}' for k, v in data['env'].items())}"
            )
        if name == "api" and target:
            met = overall["p95_ms"] is not None and overall["p95_ms"] <= target
            notes.append(f"target p95 ≤ {target} ms: {'met' if met else '**missed**'}")
        if data.get("truncated_by_budget"):
            notes.append(f"stopped by the {data.get('budget_s', '?')} s time budget")
        errors = sum(q.get("error_count", 0) for q in data["per_query"].values())
        if errors:
            notes.append(f"{errors} failed requests")
        if data.get("first_call_failures"):
            shown = "; ".join(f"{k}: {v[:60]}" for k, v in data["first_call_failures"].items())
            notes.append(f"warm-up (untimed) calls failed: {shown}")
        timed_out = sorted({f for q in data["per_query"].values() for f in q.get("timed_out_facets", [])})
        if timed_out:
            notes.append(f"facets timed out: {', '.join(timed_out)}")
        if tp.get("truncated_by_budget"):
            notes.append(f"throughput run cut by budget ({tp['completed']}/{tp['requested']})")
        if name == "linear" and "json_load_s" in data:
            notes.append(f"JSON load {data['json_load_s']} s; req/s = 1 / mean")
        if data.get("failed"):
            notes.append(f"failed: {data['failed'][:120]}")
        if data.get("loadavg_1m"):
            notes.append("load avg {}→{}".format(*data["loadavg_1m"]))
        tp_text = f"{fmt(tp.get('requests_per_s'))} ({tp.get('clients', '—')})" if tp else "not run (budget)"
        lines.append(
            f"| {title} | {fmt(overall['p50_ms'])} | {fmt(overall['p95_ms'])} | {fmt(overall['max_ms'])} | "
            f"{overall['n']} | {tp_text} | {'; '.join(notes)} |"
        )
    lines.append("")
    build = size["data"]["build_s"]
    api = size["systems"].get("api", {})
    idx = api.get("index_in_process", {})
    lines.append(
        f"Load: generate {build.get('generate_s')} s, COPY {build.get('copy_s')} s, GIN indexes "
        f"{build.get('indexes_s')} s, VACUUM ANALYZE {build.get('analyze_s')} s, JSON {build.get('json_s')} s, "
        f"SQLite {build.get('sqlite_s')} s"
        + (f" (data built {size['data']['built_at']}, reused)" if size["data"].get("cached") else "")
        + "."
    )
    if api:
        lines.append(
            f"Search index: cold first request {fmt(api.get('cold_first_request_ms'))} ms over HTTP; in-process "
            f"SQL read {idx.get('sql_read_s')} s + bitmap build {idx.get('build_s')} s "
            f"({idx.get('bitmaps_mb')} MB of bitmaps); API process RSS after the run {api.get('server_rss_mb')} MB."
        )
    if api.get("server_side"):
        inside, outside = api["server_side"], api["outside_server_timing"]
        lines.append(
            f"Split of our API's sequential latency: `search_datasets` as the server times it (`timing_ms`) "
            f"p50 {fmt(inside['p50_ms'])} / p95 {fmt(inside['p95_ms'])} ms; everything else (FastAPI, "
            f"dependencies, serialisation, uvicorn, the client) p50 {fmt(outside['p50_ms'])} / p95 "
            f"{fmt(outside['p95_ms'])} ms."
        )
    failure = api.get("default_settings_failure")
    if failure:
        log_tail = failure.get("server_log_tail", "")
        reason = next(
            (
                line.strip()
                for line in log_tail.splitlines()
                if "canceling statement" in line or "Error" in line
            ),
            "see the server log",
        )
        lines.append(
            f"With the default settings the API answered no search at this size: the first request returned "
            f"HTTP {failure['first']['status']} after {fmt(failure['first']['ms'])} ms and the next one HTTP "
            f"{failure['second']['status']} after {fmt(failure['second']['ms'])} ms (server log: `{reason[:200]}`). "
            f"The numbers above were measured with {', '.join(f'`{k}={v}`' for k, v in api['env'].items())}."
        )
    lines.append("")
    lines.append("<details><summary>Per query (p50 / p95 ms; result count)</summary>")
    lines.append("")
    lines.append("| query | our API | Datasette | linear scan | counts api / datasette / linear |")
    lines.append("|---|---:|---:|---:|---|")
    for query in QUERIES:
        cells = []
        counts = []
        for name in ("api", "datasette", "linear"):
            q = size["systems"].get(name, {}).get("per_query", {}).get(query.name)
            if q is None:
                cells.append("—")
                counts.append("—")
                continue
            text = f"{fmt(q['p50_ms'])} / {fmt(q['p95_ms'])}"
            if q.get("error_count"):
                text += f" ({q['error_count']} failed)"
            if q.get("timed_out_facets"):
                text += " (facets timed out)"
            cells.append(text)
            counts.append(fmt(q.get("count")))
        mismatch = size.get("agreement", {}).get(query.name, {}).get("api_vs_linear_facet_mismatches")
        agreement = f"; facet counts api vs linear: {mismatch} differ" if mismatch is not None else ""
        lines.append(f"| `{query.label}` | {' | '.join(cells)} | {' / '.join(counts)}{agreement} |")
    lines.append("")
    lines.append("</details>")
    lines.append(f"<!-- bench:size {label} end -->")
    return "\n".join(lines)


def update_readme(results: dict[str, Any]) -> None:
    text = (
        README.read_text()
        if README.exists()
        else "<!-- bench:results start -->\n<!-- bench:results end -->\n"
    )
    for label in sorted(results["sizes"], key=lambda k: 0 if k == "real" else int(k)):
        block = render_size(results, label)
        start, end = f"<!-- bench:size {label} start -->", f"<!-- bench:size {label} end -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            text = _insert_size_block(text, label, block)
    README.write_text(text)


def _insert_size_block(text: str, label: str, block: str) -> str:
    """Put a new size block inside the results region, in size order."""
    marker_end = "<!-- bench:results end -->"
    head, tail = text.split(marker_end, 1)
    key = 0 if label == "real" else int(label)
    blocks = head.split("<!-- bench:size ")
    # find the first existing block of a larger size and insert before it
    for i, part in enumerate(blocks[1:], start=1):
        other = part.split(" ", 1)[0]
        if (0 if other == "real" else int(other)) > key and " start -->" in part.split("\n", 1)[0]:
            return (
                "<!-- bench:size ".join(blocks[:i])
                + block
                + "\n\n<!-- bench:size "
                + "<!-- bench:size ".join(blocks[i:])
                + marker_end
                + tail
            )
    return head.rstrip("\n") + "\n\n" + block + "\n\n" + marker_end + tail


def wait_for_quiet(threshold: float, max_wait_s: float, log: Callable[[str], None]) -> float:
    """The machine is shared: wait (bounded) until the 1-minute load average drops below `threshold`."""
    started = time.monotonic()
    while os.getloadavg()[0] > threshold and time.monotonic() - started < max_wait_s:
        if time.monotonic() - started < 1:
            log(f"  waiting up to {max_wait_s:.0f} s for load average {os.getloadavg()[0]:.2f} < {threshold}")
        time.sleep(10)
    return round(time.monotonic() - started, 1)


# -- main -----------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description="Search benchmark: our API vs linear scan vs Datasette")
    parser.add_argument("--sizes", default="real,100k,1m", help="comma list: real, 100k, 1m, or any number")
    parser.add_argument("--systems", default="api,datasette,linear")
    parser.add_argument("--reps", type=int, default=None, help="rounds over the query mix (all systems)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients in the throughput run")
    parser.add_argument("--datasette-budget-s", type=float, default=None)
    parser.add_argument("--linear-budget-s", type=float, default=None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the data even if cached")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    parser.add_argument("--quiet-load", type=float, default=1.5, help="wait for this 1-min load average")
    parser.add_argument(
        "--quiet-wait-s", type=float, default=300, help="... but at most this long per system"
    )
    args = parser.parse_args()

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    command = ".venv/bin/python -m bench.search.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%d %H:%M"),
        "command": command.strip(),
        "machine": machine_facts(),
        "queries": [
            {"name": q.name, "api": api_path(q), "datasette": datasette_path(q), "pages": q.pages}
            for q in QUERIES
        ],
        "sizes": {},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    for token in args.sizes.split(","):
        n = parse_size(token)
        plan = default_plan(n, args)
        log(f"== size {plan.label}")
        paths, meta = ensure_data(n, args.seed, args.rebuild, log=log)
        size: dict[str, Any] = {
            "n": paths.n,
            "data": meta,
            "plan": plan.__dict__,
            "systems": {},
            # other people commit while this runs: the code each size was measured on
            "git_commit": code_state(),
        }
        results["sizes"][plan.label] = size
        runners = {"api": run_api, "datasette": run_datasette, "linear": run_linear}
        for name in systems:
            waited = wait_for_quiet(args.quiet_load, args.quiet_wait_s, log)
            log(f"-- {plan.label}: {name} (load average {os.getloadavg()[0]:.2f})")
            load_before = os.getloadavg()[0]
            try:
                size["systems"][name] = runners[name](paths, plan, log)
            except Exception as exc:  # a failed system is reported, the others still run
                log(f"  {name} failed: {exc!r}")
                size["systems"][name] = {"failed": repr(exc), "per_query": {}, "overall": summary([])}
            # the machine is shared: the 1-minute load average says how busy it was around the measurement
            size["systems"][name]["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            size["systems"][name]["waited_for_quiet_s"] = waited
            overall = size["systems"][name]["overall"]
            log(f"  {name}: p50 {overall['p50_ms']} ms, p95 {overall['p95_ms']} ms, max {overall['max_ms']} ms, "
                f"n={overall['n']}; throughput {size['systems'][name].get('throughput')}")  # fmt: skip
            size["agreement"] = compare_counts(size)
            out_path.write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {out_path}")
    if not args.no_readme:
        update_readme(results)
        log(f"README: {README}")


if __name__ == "__main__":
    main()
