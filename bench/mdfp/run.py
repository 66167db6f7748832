"""The planner benchmark: MDFP plans over the synthetic catalogs of bench/search/synth.py.

    .venv/bin/python -m bench.mdfp.run                         # 100k (builds or reuses bench_100000)
    .venv/bin/python -m bench.mdfp.run --sizes real,100k --reps 15

For each size it reuses (or builds) the catalog with bench.search.synth.ensure_data, then measures:

- `snapshot_cold`: the first plan after a catalog change pays for the planning snapshot (the search's bitmap
  index plus slug, name, organisation and merged-row count of every dataset), in process;
- `compute`: `app.mdfp.service.compute_plan` in process, snapshot warm: the four phases for each spec of the
  mix, `reps` rounds (round-robin over the specs);
- `post` and `get`: `POST /api/v1/plans` (compute, serialise, save, answer) and `GET /api/v1/plans/{id}` against
  our API served by uvicorn, measured by an HTTP client on the same machine.

Plans the benchmark creates are deleted at the end. Results go to bench/mdfp/results/<timestamp>.json and the
table in bench/mdfp/README.md (between the `bench:mdfp` markers) is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from app.mdfp.presets import load_presets
from app.mdfp.schemas import PlanSpec
from bench.search.run import start_api
from bench.search.synth import DEFAULT_SEED, ensure_data, parse_size, size_label

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE / "README.md"
TARGET_S = 1.0

# every preset, plus the broadest plan there is: every modality, no rule (the largest final list)
BROAD = PlanSpec(goal="Everything (no rule)")


def spec_mix() -> list[tuple[str, PlanSpec]]:
    return [(p.id, p.spec) for p in load_presets()] + [("everything", BROAD)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(seconds: list[float]) -> dict[str, float]:
    return {
        "n": len(seconds),
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def measure_in_process(database_url: str, reps: int) -> dict[str, Any]:
    from app.catalog.service import catalog_version
    from app.core.db import new_session
    from app.mdfp import service
    from app.mdfp.snapshot import load_snapshot, reset_snapshot
    from app.search.index import reset_index

    out: dict[str, Any] = {}
    with new_session(database_url) as session:
        reset_index()
        reset_snapshot()
        started = time.perf_counter()
        snapshot = load_snapshot(session, catalog_version(session))
        out["snapshot_cold_s"] = round(time.perf_counter() - started, 2)
        out["datasets"] = snapshot.size
        # PlanningSnapshot reuses the search index: service.compute_plan finds both warm from here on
        timings: dict[str, list[float]] = {name: [] for name, _ in spec_mix()}
        shapes: dict[str, dict[str, int]] = {}
        for _, spec in spec_mix():  # warm-up: lazily unpacked masks, label caches
            service.compute_plan(session, spec)
        for _ in range(reps):
            for name, spec in spec_mix():
                started = time.perf_counter()
                computed = service.compute_plan(session, spec)
                timings[name].append(time.perf_counter() - started)
                final = next(t for t in computed.phases[3]["tables"] if t["id"] == "final")
                rejected = next(t for t in computed.phases[3]["tables"] if t["id"] == "rejected")
                shapes[name] = {
                    "final": final["total_rows"],
                    "rejected": rejected["total_rows"],
                    "json_mb": round(len(json.dumps(computed.phases)) / 1e6, 1),
                }
    out["compute"] = {name: {**summarise(t), **shapes[name]} for name, t in timings.items()}
    return out


def measure_http(database_url: str, reps: int) -> dict[str, Any]:
    server = start_api(database_url)
    created: list[str] = []
    try:
        with httpx.Client(base_url=server.base, timeout=120) as client:
            started = time.perf_counter()
            first = client.post("/api/v1/plans", json={"spec": BROAD.model_dump(mode="json")})
            first.raise_for_status()
            created.append(first.json()["id"])
            cold = time.perf_counter() - started
            posts: dict[str, list[float]] = {name: [] for name, _ in spec_mix()}
            gets: dict[str, list[float]] = {name: [] for name, _ in spec_mix()}
            sizes: dict[str, float] = {}
            for _ in range(reps):
                for name, spec in spec_mix():
                    started = time.perf_counter()
                    response = client.post("/api/v1/plans", json={"spec": spec.model_dump(mode="json")})
                    posts[name].append(time.perf_counter() - started)
                    response.raise_for_status()
                    plan_id = response.json()["id"]
                    created.append(plan_id)
                    sizes[name] = round(len(response.content) / 1e6, 1)
                    started = time.perf_counter()
                    client.get(f"/api/v1/plans/{plan_id}").raise_for_status()
                    gets[name].append(time.perf_counter() - started)
        return {
            "first_post_s": round(cold, 2),
            "server_rss_mb": server.rss_mb(),
            "post": {name: {**summarise(t), "response_mb": sizes[name]} for name, t in posts.items()},
            "get": {name: summarise(t) for name, t in gets.items()},
        }
    finally:
        server.stop()
        with psycopg.connect(database_url) as conn:
            conn.execute("DELETE FROM plan WHERE id = ANY(%s)", (created,))


def run_size(n: int | None, reps: int, http: bool, log: Any = print) -> dict[str, Any]:
    paths, _meta = ensure_data(n, DEFAULT_SEED, log=log)
    result: dict[str, Any] = {"size": size_label(n), "database": paths.database_url.rsplit("/", 1)[1]}
    log(f"[{result['size']}] in process ({reps} rounds)")
    result.update(measure_in_process(paths.database_url, reps))
    if http:
        log(f"[{result['size']}] over HTTP ({reps} rounds)")
        result["http"] = measure_http(paths.database_url, reps)
    return result


def _ms(timing: dict[str, Any] | None) -> str:
    return f"{timing['median_ms']:.0f} ms ({timing['p95_ms']:.0f})" if timing else "n/a"


def readme_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| size | spec | final / rejected | compute median (p95) | POST median (p95) | GET median (p95) | JSON |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, c in result["compute"].items():
            http = result.get("http", {})
            post, get = http.get("post", {}).get(name), http.get("get", {}).get(name)
            lines.append(
                f"| {result['size']} | {name} | {c['final']:,} / {c['rejected']:,} | {_ms(c)} "
                f"| {_ms(post)} | {_ms(get)} | {c['json_mb']} MB |"
            )
    cold = ", ".join(
        f"{r['size']}: snapshot {r['snapshot_cold_s']} s"
        + (f", first POST {r['http']['first_post_s']} s" if "http" in r else "")
        for r in results
    )
    return "\n".join(lines) + f"\n\nCold (first plan after a catalog change): {cold}.\n"


def write_readme(results: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    start, end = "<!-- bench:mdfp -->", "<!-- /bench:mdfp -->"
    text = README.read_text() if README.exists() else f"{start}\n{end}\n"
    body = (
        f"Measured {facts['when']} on {facts['machine']} ({facts['reps']} rounds per spec; load average "
        f"{facts['load_average'][0]:.1f} when it ended):\n\n" + readme_table(results)
    )
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    README.write_text(f"{before}{start}\n{body}{end}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100k", help="comma-separated: real, 5k, 100k, 1m, ...")
    parser.add_argument("--reps", type=int, default=10, help="rounds over the spec mix")
    parser.add_argument("--no-http", action="store_true", help="only the in-process measurements")
    args = parser.parse_args()
    results = [run_size(parse_size(s), args.reps, not args.no_http) for s in args.sizes.split(",")]

    facts = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m bench.mdfp.run " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "reps": args.reps,
        "load_average": os.getloadavg(),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"facts": facts, "results": results}, indent=2))
    write_readme(results, facts)
    for result in results:
        worst = max(c["p95_ms"] for c in result["compute"].values())
        verdict = "under" if worst / 1000 < TARGET_S else "OVER"
        print(f"[{result['size']}] compute p95 worst {worst:.0f} ms: {verdict} the {TARGET_S:.0f} s target")
        if "http" in result:
            worst_post = max(p["p95_ms"] for p in result["http"]["post"].values())
            print(f"[{result['size']}] POST p95 worst {worst_post:.0f} ms")
    print(f"results: {out}")
    sys.exit(0)


if __name__ == "__main__":
    main()
