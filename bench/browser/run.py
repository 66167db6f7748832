"""The search page as the user feels it: from a facet click or a typed query to the results updated on screen.

    .venv/bin/python -m bench.browser.run                          # 40 facet clicks, 40 queries
    .venv/bin/python -m bench.browser.run --clicks 100 --queries 60
    .venv/bin/python -m bench.browser.run --code ../imagingx-before --database bench_browser_before
    .venv/bin/python -m bench.browser.run --url http://127.0.0.1:8000  # a portal already running

Without --url it creates (once) the database --database on the PostgreSQL of --admin-url, migrates it with the
code of --code, loads the shipped seed catalog and starts that code's web process exactly as `imagingx serve`
does (the same helper as bench/load), on a free loopback port; Redis from --redis-url. Give each checkout its
own database: the code under test migrates it.

Playwright drives Debian's Chromium (/usr/bin/chromium, headless; never `playwright install`) in a fresh
profile at 1280x900, as a first-time visitor. Every action is timed inside the page with performance.now():

- start: the user's action, seen by a capture-phase listener (the `click` on a facet value; the `keydown` of
  Enter in the search box after the query was typed);
- end: the first frame painted after the results heading (`#results-heading`) was replaced or changed in the
  DOM (a MutationObserver sees it; then one animation frame and one task, i.e. after the paint).

Facet clicks are a seeded random walk over the visible values of modality, anatomy, task, dim, access and
labeled (select a value; once two are selected or fewer than 5 datasets remain, remove one), so two runs click
the same sequence. Queries are the words researchers type (QUERIES), one after another, each replacing the
last, from /datasets. The first WARMUP actions of each kind are not counted. The report: p50, p95 and max in
milliseconds per kind; the server's part of each (time to first byte of the htmx reply, from the page's
resource timing), so the rest is the browser's; and the bytes of the htmx replies (decoded body, as the page
receives it); then the bytes of the page and of a facet click's reply for a few fixed URLs (SIZE_URLS),
comparable between checkouts. --json also keeps every timing. The visitor has no cookie, as a first visit: the portal serves
an answer it already rendered for the same URL from memory, as it would to any such visitor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.load.run import prepare_database, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FACETS = ("modality", "anatomy", "task", "dim", "access", "labeled")
QUERIES = (
    "liver",
    "brain tumor",
    "chest x-ray",
    "lung nodule",
    "prostate mri",
    "retina",
    "covid",
    "skin lesion",
    "kidney tumor",
    "cardiac",
    "polyp",
    "breast ultrasound",
    "knee",
    "pancreas",
    "brats",
    "kits19",
    "pathology",
    "dental",
    "spine ct",
    "fundus",
)
WARMUP = 3
# Fixed URLs whose reply sizes are compared between checkouts (the walk's own URLs differ between them).
SIZE_URLS = (
    "/datasets",
    "/datasets?modality=CT",
    "/datasets?modality=MR&anatomy=brain",
    "/datasets?q=liver&task=seg",
    "/datasets?dim=3D&access=open&labeled=true",
)

# Installed in every page: times the next user action to the first paint after the results changed.
PROBE = """
(() => {
  window.__bench = {start: null, end: null};
  const mark = () => { if (window.__bench.start === null) window.__bench.start = performance.now(); };
  document.addEventListener('click', (e) => {
    if (e.target instanceof Element && e.target.closest('a.facet-value')) mark();
  }, true);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.target instanceof Element && e.target.id === 'q') mark();
  }, true);
  window.__benchArm = () => {
    window.__bench = {start: null, end: null};
    const heading = document.getElementById('results-heading');
    const text = heading ? heading.textContent : null;
    const observer = new MutationObserver(() => {
      const now = document.getElementById('results-heading');
      if (now && (now !== heading || now.textContent !== text) && window.__bench.start !== null) {
        observer.disconnect();
        requestAnimationFrame(() => setTimeout(() => { window.__bench.end = performance.now(); }, 0));
      }
    });
    observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  };
})();
"""


# -- the server under test ----------------------------------------------------------------------------------------
# -- the browser ----------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# The server's part of the last htmx request: from sending it to the first byte of the answer (TTFB).
LAST_REQUEST = """() => {
  const entries = performance.getEntriesByType('resource').filter(e => e.initiatorType === 'xmlhttprequest');
  const last = entries[entries.length - 1];
  performance.clearResourceTimings();
  return last ? last.responseStart - last.requestStart : null;
}"""


def timed(page: Any, act: Any, server: list[float], timeout_s: float = 15.0) -> float:
    """Milliseconds from the user's action (`act()`) to the first paint after the results changed; the
    request's time to first byte is appended to `server`."""
    page.evaluate("window.__benchArm()")
    act()
    page.wait_for_function("() => window.__bench.end !== null", timeout=timeout_s * 1000, polling="raf")
    bench = page.evaluate("window.__bench")
    ttfb = page.evaluate(LAST_REQUEST)
    if ttfb is not None:
        server.append(float(ttfb))
    return float(bench["end"] - bench["start"])


def facet_candidates(page: Any) -> list[dict[str, Any]]:
    selector = ", ".join(f"#facet-{name} a.facet-value" for name in FACETS)
    return list(
        page.locator(selector).evaluate_all(
            """links => links.filter(a => a.offsetParent !== null).map(a => ({
                facet: a.closest('[id^="facet-"]').id.slice(6),
                value: a.dataset.value,
                selected: a.classList.contains('selected'),
                count: parseInt((a.querySelector('.count') || {}).textContent.replace(/,/g, '')) || 0,
            }))"""
        )
    )


def region_count(page: Any) -> int:
    text = page.locator("#results-heading").inner_text()
    digits = "".join(ch for ch in text.split("dataset")[0].split("of")[-1] if ch.isdigit())
    return int(digits or 0)


def click_walk(page: Any, rng: random.Random, n: int, server: list[float]) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        candidates = facet_candidates(page)
        selected = [c for c in candidates if c["selected"]]
        if selected and (len(selected) >= 2 or region_count(page) < 5):
            choice = rng.choice(selected)
        else:
            choice = rng.choice([c for c in candidates if not c["selected"] and c["count"] > 0])
        link = page.locator(f'#facet-{choice["facet"]} a.facet-value[data-value="{choice["value"]}"]')
        link.scroll_into_view_if_needed()
        times.append(timed(page, link.click, server))
        page.wait_for_load_state("domcontentloaded")
    return times


def query_run(page: Any, queries: list[str], server: list[float]) -> list[float]:
    times: list[float] = []
    box = page.locator("#q")
    for text in queries:
        box.fill(text)
        times.append(timed(page, lambda: box.press("Enter"), server))
    return times


def run_browser(base: str, clicks: int, queries: int, seed: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    replies: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        context.add_init_script(PROBE)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def on_response(response: Any) -> None:
            request = response.request
            if request.headers.get("hx-request") == "true" and response.url.startswith(base):
                replies.append({"url": response.url, "bytes": len(response.body()), "kind": current[0]})

        current = ["warmup"]
        page.on("response", on_response)
        rng = random.Random(seed)
        page.goto("/datasets")
        ignored: list[float] = []
        click_walk(page, rng, WARMUP, ignored)
        current[0] = "click"
        click_server: list[float] = []
        click_times = click_walk(page, rng, clicks, click_server)

        current[0] = "warmup"
        page.goto("/datasets")
        words = [QUERIES[i % len(QUERIES)] for i in range(queries + WARMUP)]
        query_run(page, words[:WARMUP], ignored)
        current[0] = "query"
        query_server: list[float] = []
        query_times = query_run(page, words[WARMUP:], query_server)
        page.wait_for_timeout(300)
        full_page = len(page.content().encode())
        context.close()
        browser.close()
    if errors:
        raise SystemExit(f"JavaScript errors in the page: {errors}")

    def summary(times: list[float], server: list[float], kind: str) -> dict[str, Any]:
        sizes = [r["bytes"] for r in replies if r["kind"] == kind]
        return {
            "n": len(times),
            "p50_ms": round(percentile(times, 0.5), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "max_ms": round(max(times), 1) if times else None,
            "server_p50_ms": round(percentile(server, 0.5), 1),
            "server_p95_ms": round(percentile(server, 0.95), 1),
            "times_ms": [round(t, 1) for t in times],
            "server_ms": [round(t, 1) for t in server],
            "replies": len(sizes),
            "reply_bytes_median": int(percentile([float(s) for s in sizes], 0.5)) if sizes else None,
            "reply_bytes_max": max(sizes) if sizes else None,
        }

    return {
        "facet_click": summary(click_times, click_server, "click"),
        "query": summary(query_times, query_server, "query"),
        "page_bytes_after_run": full_page,
    }


def reply_sizes(base: str) -> list[dict[str, Any]]:
    """Bytes of the whole page and of the htmx reply to a facet click (HX-Target: results), per SIZE_URLS."""
    import httpx

    sizes = []
    with httpx.Client(base_url=base, timeout=60, headers={"Accept": "text/html"}) as client:
        for url in SIZE_URLS:
            page = len(client.get(url).content)
            reply = len(client.get(url, headers={"HX-Request": "true", "HX-Target": "results"}).content)
            sizes.append({"url": url, "page_bytes": page, "reply_bytes": reply})
    return sizes


def print_report(report: dict[str, Any]) -> None:
    print(f"code: {report['code']}  ({report['base']})")
    print(
        f"{'action':<12} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'server p50':>11}"
        f" {'server p95':>11} {'replies':>8} {'bytes p50':>10} {'bytes max':>10}"
    )
    for kind in ("facet_click", "query"):
        row = report[kind]
        print(
            f"{kind:<12} {row['n']:>4} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8} "
            f"{row['server_p50_ms']:>11} {row['server_p95_ms']:>11} "
            f"{row['replies']:>8} {row['reply_bytes_median'] or 0:>10,} {row['reply_bytes_max'] or 0:>10,}"
        )
    print(f"{'bytes of':<45} {'page':>9} {'htmx reply':>11}")
    for row in report["sizes"]:
        print(f"{row['url']:<45} {row['page_bytes']:>9,} {row['reply_bytes']:>11,}")
    print(f"load average before/after: {report['load_before']} / {report['load_after']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--url", help="a running portal (default: start one)")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose web process to start")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_browser")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    process = None
    base = args.url
    code = args.code.resolve()
    if base is None:
        database_url = prepare_database(args.admin_url, args.database, code)
        process, base = start_server(code, database_url, args.redis_url, {})
    try:
        load_before = os.getloadavg()
        report = run_browser(base, args.clicks, args.queries, args.seed)
        report.update(
            sizes=reply_sizes(base),
            code=str(code),
            base=base,
            load_before=[round(x, 2) for x in load_before],
            load_after=[round(x, 2) for x in os.getloadavg()],
            when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
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
