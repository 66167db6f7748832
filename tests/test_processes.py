"""Child processes and their supervisor (app.core.processes, app.core.supervisor) on their own, without the
stack `imagingx serve` builds from them: a stopped child leaves nothing of its process group, a pid file left
by an earlier run stops that run's group and never a stranger that got the pid, and a child that dies is
restarted after its backoff.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from app.core.processes import ChildProcess, group_members, read_pidfile, spawn, stop_stale, write_pidfile
from app.core.supervisor import Backoff, ShutdownRequested, Supervisor

# a leader that ignores SIGTERM and has a grandchild in its process group
STUBBORN = (
    "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen(['sleep', '60']); print('ready', flush=True); time.sleep(60)"
)


def alive(process: psutil.Process) -> bool:
    # a killed grandchild is re-parented and may stay a zombie a while: it holds nothing
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until_gone(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in processes if alive(p)]


def start_stubborn(pidfile: Path) -> tuple[ChildProcess, list[psutil.Process]]:
    child = spawn(
        "stubborn",
        [sys.executable, "-c", STUBBORN],
        stdout=subprocess.PIPE,
        stop_timeout=0.5,
        pidfile=pidfile,
    )
    assert child.popen.stdout is not None
    assert child.popen.stdout.readline().strip() == b"ready"
    child.popen.stdout.close()  # it writes nothing more
    group = group_members(child.pid)
    assert len(group) == 2, "the leader and its grandchild share the child's own process group"
    return child, group


def test_backoff_doubles_per_failure_up_to_its_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_stop_kills_what_ignores_sigterm_and_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "run" / "stubborn.pid"
    child, group = start_stubborn(pidfile)
    record = read_pidfile(pidfile)
    assert record is not None and record["pid"] == child.pid and record["name"] == "stubborn"

    assert child.stop() == -signal.SIGKILL
    assert wait_until_gone(group) == []
    assert not pidfile.exists()


def test_a_stale_pid_file_stops_its_group_and_never_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    pidfile = tmp_path / "stubborn.pid"
    child, group = start_stubborn(pidfile)
    assert stop_stale(pidfile, timeout=0.5) is True
    assert wait_until_gone(group) == []
    assert not pidfile.exists()
    child.popen.wait()  # already reaped by the stop: this only tells the Popen object

    # our own pid, but not the start time recorded: the pid now belongs to someone else
    write_pidfile(pidfile, os.getpid(), sys.executable)
    record = read_pidfile(pidfile)
    assert record is not None
    pidfile.write_text(json.dumps({**record, "create_time": 1.0}))
    assert stop_stale(pidfile) is False
    assert not pidfile.exists()


def test_a_supervised_child_that_dies_is_restarted_after_its_backoff_and_stopped_at_the_end() -> None:
    children: list[ChildProcess] = []

    def start() -> ChildProcess:
        # the first run fails at once, the restarted one stays up
        argv = [sys.executable, "-c", "raise SystemExit(3)"] if not children else ["sleep", "60"]
        children.append(spawn("flaky", argv))
        return children[-1]

    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if " restarted " in line:
            os.kill(os.getpid(), signal.SIGTERM)  # what Ctrl-C or a service manager would send

    with Supervisor(report=report) as supervisor:
        supervised = supervisor.supervise("flaky", start, backoff=Backoff(initial=0.1, maximum=0.1))
        with pytest.raises(ShutdownRequested):
            supervisor.watch(interval=0.02)

    assert lines == [
        "flaky exited (code 3); restarting in 0.1 s",
        f"flaky restarted (pid {children[1].pid}, restart 1)",
    ]
    assert supervised.restarts == 1
    assert children[1].poll() == -signal.SIGTERM, "stopped when the supervisor was left"
