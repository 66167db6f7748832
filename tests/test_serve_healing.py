"""`imagingx serve` heals itself: every child killed with SIGKILL comes back, and a stop loses no download.

What a user would notice: after kill -9 of the web app, the Celery worker, the embedded Redis or the embedded
PostgreSQL, the portal answers again within 30 s (503 with the error envelope while PostgreSQL is away, then
200 without the web app being restarted); jobs still run. SIGTERM with a download in flight stops everything
within 10 s and the download resumes (with `Range`) on the next start.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from test_serve import (
    assert_gone,
    free_port,
    imagingx_command,
    processes_of,
    service_environment,
    set_source_with_cli,
)

from app.core.embedded import read_service_url

BACK_WITHIN = 30.0  # seconds the portal may take to answer again after a child is killed


@dataclass
class ServeRun:
    """One `imagingx serve` process, its log and its address."""

    process: subprocess.Popen[bytes]
    log_file: Path
    url: str
    home: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def child(self, marker: str) -> psutil.Process:
        """The direct child of serve whose command line contains `marker` (postgres, redis-server, ...)."""
        for process in psutil.Process(self.process.pid).children():
            try:
                if process.status() != psutil.STATUS_ZOMBIE and marker in " ".join(process.cmdline()):
                    return process
            except psutil.Error:
                continue
        raise AssertionError(f"no {marker} child of serve:\n{self.log()[-3000:]}")

    def stop(self) -> float:
        """SIGTERM; returns the seconds serve took to exit (asserting it exited with 0)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        took = time.monotonic() - started
        assert code == 0, self.log()[-3000:]
        return took


def start_serve(home: Path, log_file: Path, port: int, **settings: str) -> ServeRun:
    env = {**service_environment(home), **settings}
    with log_file.open("ab") as log_handle:
        process = subprocess.Popen(
            [*imagingx_command(), "serve", "--port", str(port), "--worker-concurrency", "1"],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    run = ServeRun(process, log_file, url, home)
    # the second run of a test appends to the same log: wait for a new "running at" line
    before = log_file.read_text(errors="replace").count(f"running at {url}/") if log_file.exists() else 0
    deadline = time.monotonic() + 240
    while run.log().count(f"running at {url}/") <= before:
        if process.poll() is not None:
            pytest.fail(f"imagingx serve exited with {process.returncode}:\n{run.log()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"imagingx serve did not start:\n{run.log()[-3000:]}")
        time.sleep(0.25)
    return run


@pytest.fixture
def cleanup_home(fresh_home: Path) -> Iterator[Path]:
    yield fresh_home
    for process in processes_of(fresh_home):
        process.kill()


def probe(run: ServeRun, label: str) -> tuple[float, list[tuple[int, dict | None]]]:
    """GET the first dataset page until it answers 200; returns the seconds that took and every answer
    (status, JSON body or None; 0 when nothing answered). A distinct `q` each time: no cache can answer."""
    started = time.monotonic()
    answers: list[tuple[int, dict | None]] = []
    for attempt in range(100_000):
        try:
            response = httpx.get(
                f"{run.url}/api/v1/datasets",
                params={"page_size": 1, "q": f"{label}{attempt}"},
                timeout=5,
            )
            body = response.json() if "json" in response.headers.get("content-type", "") else None
            answers.append((response.status_code, body))
            if response.status_code == 200:
                return time.monotonic() - started, answers
        except httpx.TransportError:
            answers.append((0, None))
        if time.monotonic() - started > BACK_WITHIN:
            pytest.fail(
                f"no 200 within {BACK_WITHIN:.0f} s after {label}: {answers[-5:]}\n{run.log()[-3000:]}"
            )
        time.sleep(0.1)
    raise AssertionError("unreachable")


def ping_worker(run: ServeRun, timeout: float) -> dict:
    """Send the worker a task through the (embedded) Redis and wait for its reply."""
    from celery import Celery

    redis_url = read_service_url(run.home, "redis")
    assert redis_url
    client = Celery(broker=redis_url, backend=redis_url)
    try:
        return client.send_task("workers.tasks.ping", queue="imagingx").get(timeout=timeout)
    finally:
        client.close()


def kill_and_wait(run: ServeRun, name: str, marker: str) -> tuple[int, float, list[tuple[int, dict | None]]]:
    """SIGKILL serve's `marker` child; wait for the portal and for serve's report of the restart."""
    victim = run.child(marker)
    restarts_before = run.log().count(f"{name} restarted")
    victim.send_signal(signal.SIGKILL)
    took, answers = probe(run, f"after-{name}-")
    wait_for_line_count(run, f"{name} restarted", restarts_before + 1)
    assert f"{name} exited (signal SIGKILL); restarting in" in run.log()
    replacement = run.child(marker)
    assert replacement.pid != victim.pid
    return victim.pid, took, answers


def wait_for_line_count(run: ServeRun, text: str, count: int) -> None:
    deadline = time.monotonic() + BACK_WITHIN
    while run.log().count(text) < count:
        if run.process.poll() is not None:
            pytest.fail(f"imagingx serve exited with {run.process.returncode}:\n{run.log()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} within {BACK_WITHIN:.0f} s:\n{run.log()[-3000:]}")
        time.sleep(0.1)


def test_every_child_killed_with_sigkill_is_restarted_and_the_portal_answers_again(
    tmp_path: Path, cleanup_home: Path
) -> None:
    home = cleanup_home
    run = start_serve(home, tmp_path / "serve.log", free_port())
    try:
        assert ping_worker(run, timeout=60)["reply"] == "pong"

        # the web app: nothing answers until it is back
        _, took, answers = kill_and_wait(run, "web", "uvicorn")
        assert took < BACK_WITHIN

        # the worker: the portal never stopped answering; the new worker runs tasks
        kill_and_wait(run, "worker", "celery")
        assert ping_worker(run, timeout=BACK_WITHIN)["reply"] == "pong"

        # Redis comes back on its port, with its password: the worker reconnects and runs tasks again
        redis_url = read_service_url(home, "redis")
        kill_and_wait(run, "redis", "redis-server")
        assert read_service_url(home, "redis") == redis_url
        assert ping_worker(run, timeout=BACK_WITHIN)["reply"] == "pong"

        # PostgreSQL: 503 with the error envelope meanwhile, then 200 from the same web process
        web = run.child("uvicorn")
        database_url = read_service_url(home, "postgres")
        _, took, answers = kill_and_wait(run, "postgres", "pginstall/bin/postgres")
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {200, 503}, answers
        assert 503 in statuses, f"the web app never noticed PostgreSQL was gone: {answers}"
        for status, body in answers:
            if status == 503:
                assert body is not None and body["ok"] is False and body["status"] == 503, body
                assert "database" in body["error"], body
        assert run.child("uvicorn").pid == web.pid, "the web app recovers without a restart"
        assert read_service_url(home, "postgres") == database_url
        response = httpx.get(f"{run.url}/api/v1/datasets", params={"page_size": 1}, timeout=30)
        assert response.status_code == 200 and response.json()["count"] > 900
        assert ping_worker(run, timeout=BACK_WITHIN)["catalog_version"] >= 1

        # every worker start re-sends unfinished units (2 starts), and so does serve after it restarted Redis or
        # PostgreSQL (which may have lost queued messages or failed units): 4 distinct resume tasks
        resumes = re.compile(r"Task workers\.tasks\.resume_bundles\[([^]]+)\] received")
        deadline = time.monotonic() + BACK_WITHIN
        while len(set(resumes.findall(run.log()))) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(set(resumes.findall(run.log()))) == 4, run.log()[-3000:]

        children = psutil.Process(run.process.pid).children(recursive=True)
        assert run.stop() < 10
        assert_gone(children, "serve after SIGTERM")
        assert not processes_of(home), run.log()[-3000:]
    finally:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def test_sigterm_with_a_download_in_flight_stops_within_10_s_and_the_next_start_resumes_it(
    tmp_path: Path, cleanup_home: Path
) -> None:
    from bundle_fixtures import build_archives
    from fixtures_http import LocalHTTPServer

    home = cleanup_home
    name, body, _ = build_archives(tmp_path / "sources")["msd03-liver"]
    log_file = tmp_path / "serve.log"
    port = free_port()
    with LocalHTTPServer() as server:
        path = f"/msd03-liver/{name}"
        # ~14 s for the whole archive: the download is certainly running when serve is told to stop
        route = server.add_file(path, body, rate=20_000)
        descriptor = tmp_path / "source.json"
        digest = hashlib.sha256(body).hexdigest()
        descriptor.write_text(
            json.dumps(
                {"kind": "http", "files": [{"url": server.url(path), "sha256": digest, "size": len(body)}]}
            )
        )
        loopback = {"IMAGINGX_ALLOW_PRIVATE_SOURCES": "1"}
        run = start_serve(home, log_file, port, **loopback)
        try:
            set_source = set_source_with_cli(home, "msd03-liver", descriptor)
            assert set_source.returncode == 0, set_source.stdout + set_source.stderr
            created = httpx.post(f"{run.url}/api/v1/bundles", json={"datasets": ["msd03-liver"]}, timeout=30)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]

            deadline = time.monotonic() + 90
            while not any(request.bytes_sent >= 40_000 for request in server.requests_to(path)):
                assert time.monotonic() < deadline, f"the download did not start:\n{run.log()[-3000:]}"
                time.sleep(0.1)
            took = run.stop()
            print(f"serve stopped {took:.1f} s after SIGTERM with a download in flight")
            assert took <= 10, f"serve took {took:.1f} s to stop with a download in flight"
        finally:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
        assert not processes_of(home), run.log()[-3000:]
        partials = list((home / "cache" / "partial").glob("*.part")) if (home / "cache").exists() else []
        partials = partials or list(home.rglob("*.part"))
        assert len(partials) == 1, f"the partial download is kept: {list(home.rglob('*'))[:50]}"
        kept = partials[0].stat().st_size
        first = server.requests_to(path)
        assert len(first) == 1 and "Range" not in first[0].headers
        assert 40_000 <= kept < len(body), kept

        route.rate = None  # the host is fast now: the resume finishes at once
        run = start_serve(home, log_file, port, **loopback)
        try:
            deadline = time.monotonic() + 120
            while True:
                job = httpx.get(f"{run.url}/api/v1/bundles/{job_id}", timeout=30).json()
                if job["state"] in ("done", "failed", "cancelled"):
                    break
                assert time.monotonic() < deadline, f"the job did not finish: {job}\n{run.log()[-3000:]}"
                time.sleep(0.5)
            assert job["state"] == "done", job
            resumed = server.requests_to(path)[1:]
            assert resumed, "the next start downloads the rest"
            assert resumed[0].headers.get("Range") == f"bytes={kept}-", resumed[0].headers
            assert resumed[0].bytes_sent == len(body) - kept
            # nothing is fetched twice but what was still in flight (socket buffers) when the worker stopped
            assert kept <= first[0].bytes_sent <= kept + 2**20
            assert run.stop() <= 10
        finally:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
