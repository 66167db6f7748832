"""`imagingx serve` on a fresh machine, and the embedded PostgreSQL and Redis it relies on.

What a user would notice: the services start, answer, keep their data across restarts, and leave no process
behind when stopped, when the stack is SIGTERMed, or when an earlier run was SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis

from app.core.embedded import EmbeddedPostgres, EmbeddedRedis, read_service_url

SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "IMAGINGX_DATABASE_URL", "IMAGINGX_REDIS_URL")


def processes_of(home: Path) -> list[psutil.Process]:
    """Live processes that belong to `home`: working in it, naming it, or started with IMAGINGX_HOME=home."""
    home_text = str(home)
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if (
                process.cwd().startswith(home_text)
                or any(home_text in part for part in process.cmdline())
                or process.environ().get("IMAGINGX_HOME") == home_text
            ):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def assert_gone(processes: list[psutil.Process], what: str) -> None:
    _, alive = psutil.wait_procs(processes, timeout=15)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"{what} left running: {[(p.pid, p.name()) for p in alive]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_environment(home: Path) -> dict[str, str]:
    """The environment of a fresh machine: nothing configured, state in `home`."""
    # the session's own Celery queue (conftest) is configuration too: a fresh machine uses the default
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SERVICE_VARIABLES and key != "IMAGINGX_CELERY_QUEUE"
    }
    env["IMAGINGX_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_embedded_services_answer_keep_data_and_stop_without_leftovers(fresh_home: Path) -> None:
    home = fresh_home
    postgres = EmbeddedPostgres(home, durable=False)
    redis_server = EmbeddedRedis(home)
    with postgres, redis_server:
        assert postgres.url and redis_server.url
        with psycopg.connect(postgres.url) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("imagingx",)
            connection.execute("CREATE TABLE kept (value text)")
            connection.execute("INSERT INTO kept VALUES ('still here')")
        assert redis.Redis.from_url(redis_server.url).ping()
        running = processes_of(home)
        assert {postgres.pid, redis_server.pid} <= {p.pid for p in running}
        assert (home / "run" / "postgres.pid").exists() and (home / "run" / "redis.pid").exists()
    assert_gone(running, "stop()")
    assert not processes_of(home)
    assert not (home / "run" / "postgres.pid").exists() and not (home / "run" / "redis.pid").exists()

    with postgres, psycopg.connect(postgres.url) as connection:
        assert connection.execute("SELECT value FROM kept").fetchone() == ("still here",)
    assert not processes_of(home)


def test_embedded_services_refuse_a_second_owner_of_the_same_home(tmp_path: Path) -> None:
    from app.core.processes import AlreadyRunning

    with EmbeddedRedis(tmp_path), pytest.raises(AlreadyRunning):
        EmbeddedRedis(tmp_path).start()
    assert not processes_of(tmp_path)


HELPER = textwrap.dedent(
    """
    import json, sys, time
    from app.core.embedded import EmbeddedPostgres, EmbeddedRedis

    home, die_with_parent = sys.argv[1], sys.argv[2] == "1"
    postgres = EmbeddedPostgres(home, durable=False, die_with_parent=die_with_parent)
    redis_server = EmbeddedRedis(home, die_with_parent=die_with_parent)
    postgres.start()
    redis_server.start()
    print(json.dumps({"postgres": postgres.pid, "redis": redis_server.pid}), flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def killed_run(fresh_home: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    """A home whose services were started by a process that was then SIGKILLed (no cleanup ran)."""
    home = fresh_home
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(home), "0"], stdout=subprocess.PIPE, env=service_environment(home)
    )
    assert helper.stdout is not None
    pids = json.loads(helper.stdout.readline())
    helper.kill()
    helper.wait()
    yield home, pids
    for process in processes_of(home):
        process.kill()


def test_start_stops_services_left_running_by_a_sigkilled_run(
    killed_run: tuple[Path, dict[str, int]],
) -> None:
    home, pids = killed_run
    orphans = [psutil.Process(pids["postgres"]), psutil.Process(pids["redis"])]
    assert all(p.is_running() for p in orphans), "the orphans should outlive the killed run"

    with EmbeddedPostgres(home, durable=False) as postgres, EmbeddedRedis(home) as redis_server:
        assert_gone(orphans, "a SIGKILLed run")
        assert postgres.pid != pids["postgres"] and redis_server.pid != pids["redis"]
        with psycopg.connect(postgres.url) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(redis_server.url).ping()
    assert not processes_of(home)


def test_start_after_the_services_themselves_were_sigkilled(killed_run: tuple[Path, dict[str, int]]) -> None:
    home, pids = killed_run
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    assert (home / "postgres" / "data" / "postmaster.pid").exists()

    with EmbeddedPostgres(home, durable=False) as postgres, EmbeddedRedis(home) as redis_server:
        with psycopg.connect(postgres.url) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(redis_server.url).ping()
    assert not processes_of(home)


def test_services_stop_by_themselves_when_their_parent_is_sigkilled(fresh_home: Path) -> None:
    home = fresh_home
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(home), "1"], stdout=subprocess.PIPE, env=service_environment(home)
    )
    assert helper.stdout is not None
    pids = json.loads(helper.stdout.readline())
    services = [psutil.Process(pid) for pid in pids.values()]
    helper.kill()
    helper.wait()
    assert_gone(services, "a SIGKILLed parent")
    assert_gone(processes_of(home), "a SIGKILLed parent")


def imagingx_command() -> list[str]:
    script = Path(sys.executable).with_name("imagingx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def set_source_with_cli(home: Path, slug: str, descriptor: Path) -> subprocess.CompletedProcess[str]:
    """`imagingx catalog set-source SLUG FILE` run as a user would, against the portal serving `home`."""
    return subprocess.run(
        [*imagingx_command(), "catalog", "set-source", slug, str(descriptor)],
        env=service_environment(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_line(log_file: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_file.read_text(errors="replace"):
        if process.poll() is not None:
            pytest.fail(f"imagingx serve exited with {process.returncode}:\n{log_file.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} within {timeout:.0f} s:\n{log_file.read_text()}")
        time.sleep(0.25)


def test_serve_on_a_fresh_machine_runs_everything_and_stops_on_sigterm(
    tmp_path: Path, fresh_home: Path
) -> None:
    from celery import Celery

    home = fresh_home
    port = free_port()
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as log_handle:
        serve = subprocess.Popen(
            [*imagingx_command(), "serve", "--port", str(port), "--worker-concurrency", "1"],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=service_environment(home),
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_line(log_file, f"running at {url}/", serve, timeout=240)

        response = httpx.get(f"{url}/api/v1/datasets", params={"page_size": 1}, timeout=30)
        assert response.status_code == 200, response.text
        # the whole seed catalog was loaded (its exact size is the catalog import tests' business)
        assert response.json()["count"] > 900

        redis_url = read_service_url(home, "redis")
        assert redis_url, "serve records the embedded Redis in <home>/run/redis.pid"
        client = Celery(broker=redis_url, backend=redis_url)
        try:
            reply = client.send_task("workers.tasks.ping", queue="imagingx").get(timeout=90)
        finally:
            client.close()
        assert reply["reply"] == "pong"
        assert reply["catalog_version"] >= 1

        # other commands find the running portal's embedded services without any configuration
        descriptor = tmp_path / "source.json"
        descriptor.write_text('{"kind": "zenodo", "record": "1234"}')
        set_source = set_source_with_cli(home, "msd03-liver", descriptor)
        assert set_source.returncode == 0, set_source.stdout + set_source.stderr
        assert "source set (zenodo)" in set_source.stdout
        detail = httpx.get(f"{url}/api/v1/datasets/msd03-liver", timeout=30).json()
        assert detail["automated_source"] == "zenodo"
        status = subprocess.run(
            [*imagingx_command(), "bundle", "status", "no-such-bundle"],
            env=service_environment(home),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 1 and "HTTP 404" in status.stderr, status.stdout + status.stderr
        assert (home / "run" / "services.json").exists()

        children = psutil.Process(serve.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for expected in ("postgres", "redis-server", "celery", "uvicorn"):
            assert expected in names, f"{expected} is not running under serve: {names}"

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=120) == 0, log_file.read_text()
        assert_gone(children, "imagingx serve after SIGTERM")
        assert not processes_of(home), log_file.read_text()
        assert "Stopped." in log_file.read_text()
        assert not (home / "run" / "services.json").exists(), "a stopped portal is not advertised"
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        for process in processes_of(home):
            process.kill()
