"""Run as root, `imagingx serve` (and `imagingx worker`) run the Celery worker as IMAGINGX_WORKER_USER.

The worker unpacks and parses archives and images from anywhere, so it must not hold root's privileges. What an
operator would notice: the worker's processes belong to `nobody`, a bundle job still completes, the folders
the worker writes to (and what an earlier run as root left in them) are owned by that account, and an account
that does not exist stops serve with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from test_serve import free_port, imagingx_command, processes_of, service_environment, set_source_with_cli
from test_serve_healing import start_serve

from app import stack
from app.core import processes
from app.core.config import Settings
from app.core.processes import hand_over, read_pidfile
from app.stack import reload_settings, worker_folders

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the worker drops privileges only when run as root")


def owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


@ROOT_ONLY
def test_hand_over_makes_the_worker_folders_and_what_they_hold_owned_by_the_account(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = processes.unprivileged_account("nobody")
    assert nobody is not None
    home = fresh_home
    os.chmod(home, 0o700)
    store = home / "elsewhere" / "store"
    settings = Settings(home=home, storage_url=f"file://{store}")
    # what an earlier run as root left: a cached file shared by hard link with a job, a partial download, a lock
    cached = home / "cache" / "sha256" / "ab12"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"archive")
    cached.chmod(0o444)
    (home / "cache" / "partial").mkdir()
    (home / "cache" / "partial" / "sha256-cd34.part").write_bytes(b"half")
    (home / "cache" / "locks").mkdir()
    (home / "cache" / "locks" / "sha256-cd34.lock").touch()
    job = home / "jobs" / "job-1" / "downloads"
    job.mkdir(parents=True)
    os.link(cached, job / "archive.tar.gz")
    (store / "job-0" / "bundle").mkdir(parents=True)
    (store / "job-0" / "bundle" / "SHA256SUMS").write_text("")
    # what must stay root's: whatever links point to, and special files
    outside = home / "outside"
    outside.mkdir()
    (outside / "secret").write_text("root only")
    (home / "cache" / "to-secret").symlink_to(outside / "secret")
    (home / "cache" / "to-outside").symlink_to(outside, target_is_directory=True)
    os.mkfifo(home / "jobs" / "fifo")

    folders = worker_folders(settings)
    assert folders == [store, home / "cache", home / "jobs", home / "worker-home"]
    hand_over(nobody, folders)

    theirs = (nobody.uid, nobody.gid)
    for folder in folders:
        assert folder.is_dir()
        for path in [folder, *folder.rglob("*")]:
            if path.name != "fifo":
                assert owner(path) == theirs, path
    assert owner(home / "jobs" / "fifo") == (0, 0)
    assert owner(outside) == (0, 0) and owner(outside / "secret") == (0, 0)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o444, "modes are left as they were"
    # a way in for the account, and nothing more
    assert stat.S_IMODE(home.stat().st_mode) == 0o701
    assert owner(home) == (0, 0) and owner(home / "elsewhere") == (0, 0)

    # where the kernel lets anyone hard-link anyone's file, a file with other links is not handed over: it
    # could be a link to /etc/shadow that a compromised worker made
    os.chown(cached, 0, 0)
    monkeypatch.setattr(processes, "_hardlinks_protected", lambda: False)
    hand_over(nobody, folders)
    assert owner(cached) == (0, 0)


def test_an_unknown_worker_account_stops_serve_with_one_clear_line(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINGX_HOME", str(fresh_home))
    monkeypatch.setenv("IMAGINGX_WORKER_USER", "no-such-account-imagingx")
    monkeypatch.setattr(processes.os, "geteuid", lambda: 0)  # as if root: the account is looked up
    reload_settings()
    lines: list[str] = []
    try:
        assert stack.serve("127.0.0.1", free_port(), out=lines.append) == 1
    finally:
        monkeypatch.undo()
        reload_settings()
    assert len(lines) == 1 and lines[0].startswith("error: IMAGINGX_WORKER_USER='no-such-account-imagingx'")
    assert "is not an account on this machine" in lines[0]
    assert not any(fresh_home.iterdir()), "nothing was started"


@ROOT_ONLY
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unknown_worker_account_is_an_error_without_traceback(fresh_home: Path, command: str) -> None:
    env = {
        **service_environment(fresh_home),
        "IMAGINGX_WORKER_USER": "no-such-account-imagingx",
        # `imagingx worker` needs both configured before it looks at the account; nothing connects to them
        **({"DATABASE_URL": "postgresql://127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
           if command == "worker" else {}),
    }  # fmt: skip
    result = subprocess.run(
        [*imagingx_command(), command], env=env, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "error: IMAGINGX_WORKER_USER='no-such-account-imagingx' is not an account" in output
    assert "Traceback" not in output


def worker_processes(home: Path) -> list[psutil.Process]:
    """The Celery main process (from serve's pid file) and its pool children, once the pool is up."""
    deadline = time.monotonic() + 60
    while True:
        record = read_pidfile(home / "run" / "worker.pid")
        if record is not None:
            main = psutil.Process(record["pid"])
            children = main.children(recursive=True)
            if children:
                return [main, *children]
        assert time.monotonic() < deadline, "the worker's pool did not start"
        time.sleep(0.25)


@ROOT_ONLY
def test_serve_as_root_runs_the_worker_as_nobody_and_a_bundle_job_completes(
    tmp_path: Path, fresh_home: Path
) -> None:
    from bundle_fixtures import build_archives
    from fixtures_http import LocalHTTPServer

    nobody = pwd.getpwnam("nobody")
    home = fresh_home
    # a download cache from an earlier run as root: the worker must be able to resume and lock in it
    stale = home / "cache" / "partial" / "sha256-0000.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    name, body, _ = build_archives(tmp_path / "sources")["msd03-liver"]
    log_file = tmp_path / "serve.log"
    with LocalHTTPServer() as server:
        path = f"/msd03-liver/{name}"
        server.add_file(path, body)
        descriptor = tmp_path / "source.json"
        digest = hashlib.sha256(body).hexdigest()
        descriptor.write_text(
            json.dumps(
                {"kind": "http", "files": [{"url": server.url(path), "sha256": digest, "size": len(body)}]}
            )
        )
        run = start_serve(home, log_file, free_port(), IMAGINGX_ALLOW_PRIVATE_SOURCES="1")
        try:
            assert "The worker runs as nobody (IMAGINGX_WORKER_USER), not root" in run.log()
            workers = worker_processes(home)
            for process in workers:
                assert set(process.uids()) == {nobody.pw_uid}, (process.pid, process.cmdline())
                assert set(process.gids()) == {nobody.pw_gid}, (process.pid, process.cmdline())
                assert process.environ()["HOME"] == str(home / "worker-home")
            assert "celery" in " ".join(workers[0].cmdline())
            assert owner(stale) == (nobody.pw_uid, nobody.pw_gid)
            # the web process stays with serve's account
            assert run.child("uvicorn").uids().real == 0

            set_source = set_source_with_cli(home, "msd03-liver", descriptor)
            assert set_source.returncode == 0, set_source.stdout + set_source.stderr
            created = httpx.post(f"{run.url}/api/v1/bundles", json={"datasets": ["msd03-liver"]}, timeout=30)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + 180
            while True:
                job = httpx.get(f"{run.url}/api/v1/bundles/{job_id}", timeout=30).json()
                if job["state"] in ("done", "failed", "cancelled"):
                    break
                assert time.monotonic() < deadline, f"the job did not finish: {job}\n{run.log()[-3000:]}"
                time.sleep(0.5)
            assert job["state"] == "done", f"{job}\n{run.log()[-3000:]}"
            bundle_files = [p for p in (home / "store" / job_id).rglob("*") if p.is_file()]
            assert bundle_files, "the bundle is in the store"
            assert {owner(p) for p in bundle_files} == {(nobody.pw_uid, nobody.pw_gid)}
            download = httpx.get(f"{run.url}{job['download_url']}", timeout=60)
            assert download.status_code == 200 and download.content, "the web process serves it"
            for process in worker_processes(home):
                assert set(process.uids()) == {nobody.pw_uid}, (process.pid, process.cmdline())
            assert run.stop() <= 10
        finally:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()
            for process in processes_of(home):
                process.kill()
