"""Child processes that never outlive the process that started them, and what they need around them.

Every child runs in its own process group (so a terminal's Ctrl-C reaches only us and we stop the children in
order), is told by the kernel to stop if we die without cleaning up (parent-death signal), and may leave a pid
file so a later run can recognise and stop whatever a SIGKILLed run left behind (pid, start time and
executable: pids get reused). Also here: the unprivileged account a root parent's children drop to and the
permissions that account needs, exclusive locks held for a process's lifetime, and waiting for an HTTP server.

Restarting children that die is app.core.supervisor's; what `imagingx serve` starts is app.stack's.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

log = logging.getLogger("imagingx.supervisor")

_PR_SET_PDEATHSIG = 1


# --- accounts and permissions --------------------------------------------------------------------------------
# PostgreSQL refuses to run as root, and the worker must not (it parses untrusted archives): a root parent starts
# them as an unprivileged account and gives that account what it needs, and nothing more.


@dataclass(frozen=True)
class RunAs:
    """An account to drop to in the child (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


def unprivileged_account(name: str = "nobody") -> RunAs | None:
    """None when we are not root (children run as us); otherwise the account root's children drop to."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(name)
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def grant_traversal(account: RunAs, directory: Path, who: str) -> None:
    """Let `account` reach `directory`: add search permission (o+x, never read) to ancestors lacking it."""
    for ancestor in [directory, *directory.parents]:
        info = ancestor.stat()
        if info.st_uid == account.uid or info.st_mode & stat.S_IXOTH:
            continue
        if info.st_gid == account.gid and info.st_mode & stat.S_IXGRP:
            continue
        log.warning(
            "adding o+x to %s so %s, running as %s, can reach %s", ancestor, who, account.name, directory
        )
        os.chmod(ancestor, info.st_mode | stat.S_IXOTH)


def grant_read(account: RunAs, tree: Path) -> None:
    """Let `account` read (and run) the files under `tree` that lack it: a root umask of 077 at install."""
    for path in [tree, *tree.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0)
        if mode & wanted != wanted:
            os.chmod(path, mode | wanted)


def _hardlinks_protected() -> bool:
    """Whether the kernel refuses hard links to files one does not own (fs.protected_hardlinks)."""
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def hand_over(account: RunAs, folders: Iterable[Path], *, who: str = "the account") -> None:
    """Create each folder if missing and make it, and everything already in it (say a download cache from an
    earlier run as root, which the worker must lock, resume and prune), owned by `account`; `who` (what runs as
    `account`) names it in the warnings.

    The folders may hold what a compromised child left there, so the walk never follows a symbolic link
    (os.fwalk with directory descriptors; links themselves are lchowned), chowns only directories, regular files
    and links (never a device or socket), and leaves alone a file with several links unless the kernel stops
    `account` from linking files it does not own: else a link to /etc/shadow would be handed over.
    """
    links_protected = _hardlinks_protected()
    owner = (account.uid, account.gid)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        top = folder.resolve()
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(top, follow_symlinks=False):
            info = os.fstat(dir_fd)
            if (info.st_uid, info.st_gid) != owner:
                os.chown(dir_fd, *owner)
            for name in [*dirnames, *filenames]:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                mode = info.st_mode
                if (info.st_uid, info.st_gid) == owner or stat.S_ISDIR(mode):
                    continue  # a directory is chowned when the walk enters it
                if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    continue
                if stat.S_ISREG(mode) and info.st_nlink > 1 and not links_protected:
                    log.warning(
                        "not handing %s/%s to %s: it has other hard links", dirpath, name, account.name
                    )
                    continue
                os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
        grant_traversal(account, top, who)


def drop_privileges(account: RunAs) -> None:
    """Become `account` for good (no supplementary groups): for `imagingx worker`, before exec'ing Celery."""
    os.setgroups([])
    os.setgid(account.gid)
    os.setuid(account.uid)


# --- locks and pid files -------------------------------------------------------------------------------------


class AlreadyRunning(RuntimeError):
    """Another live process holds the lock for the same home."""


def acquire_lock(path: Path, what: str) -> IO[str]:
    """Take an flock on `path` (the kernel drops it when we die, even by SIGKILL) or raise AlreadyRunning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(f"{what} is already running for this home (pid {holder}, lock {path})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release_lock(handle: IO[str]) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def write_pidfile(path: Path, pid: int, executable: str, **extra: Any) -> None:
    """Record a child so a later run can recognise it: pid + start time + executable (pids get reused)."""
    record = {
        "pid": pid,
        "create_time": psutil.Process(pid).create_time(),
        "exe": os.path.realpath(executable),
        "pgid": pid,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # pid files may carry service URLs with passwords: owner-only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    tmp.replace(path)


def read_pidfile(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def recorded_process(record: dict[str, Any]) -> psutil.Process | None:
    """The live process a pid file describes, or None when it is gone or the pid now belongs to another."""
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - float(record.get("create_time", 0))) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        expected = record.get("exe")
        if expected and os.path.realpath(process.exe()) != expected:
            return None
        return process
    except (psutil.Error, OSError):
        return None


def stop_stale(pidfile: Path, *, stop_signal: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Stop the process group a pid file describes if it is still ours and alive; remove the file.

    Returns True when something was stopped.
    """
    record = read_pidfile(pidfile)
    stopped = False
    if record is not None:
        process = recorded_process(record)
        if process is not None:
            log.warning("stopping %s (pid %d) left running by an earlier run", pidfile.stem, process.pid)
            members = group_members(int(record.get("pgid", process.pid)))
            terminate([process, *[m for m in members if m.pid != process.pid]], stop_signal, timeout)
            stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == pgid:
                members.append(process)
    return members


def terminate(processes: Sequence[psutil.Process], stop_signal: int, timeout: float) -> None:
    """Send `stop_signal` to the first process (the leader), wait, then SIGKILL every survivor."""
    if not processes:
        return
    with contextlib.suppress(psutil.Error):
        processes[0].send_signal(stop_signal)
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


# --- children ------------------------------------------------------------------------------------------------


def _child_setup(death_signal: int | None) -> Callable[[], None] | None:
    """Runs in the child after fork (and after the uid change, which would clear it): ask the kernel to send
    `death_signal` when we die, so a SIGKILLed `imagingx serve` leaves no orphans."""
    if death_signal is None or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # we died before prctl took effect
            os.kill(os.getpid(), int(death_signal))

    return setup


class ChildProcess:
    """A child in its own process group; `stop()` leaves nothing of that group alive."""

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        *,
        stop_signal: int,
        stop_timeout: float,
        pidfile: Path | None,
    ) -> None:
        self.name = name
        self.popen = popen
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.pidfile = pidfile

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """Exit code if the child has exited, else None. Does not reap it: while the zombie exists its
        process group id cannot be reused, so `stop()` can still sweep the group safely."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.popen.poll()
        if result is None or result.si_pid == 0:
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status
        return -result.si_status

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def stop(self) -> int:
        """Ask the child to stop, wait `stop_timeout`, then SIGKILL its whole process group."""
        if self.popen.returncode is None:
            if self.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, self.stop_signal)
                if not self._wait_exit(self.stop_timeout):
                    log.warning("%s did not stop within %.0f s; killing it", self.name, self.stop_timeout)
                    self._signal_group(signal.SIGKILL)
                    self._wait_exit(10)
            # the leader is gone (a zombie still holds the group id): nothing of its group may remain
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)
        return self.popen.returncode


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    run_as: RunAs | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 20.0,
    pidfile: Path | None = None,
    die_with_parent: bool = True,
    **pidfile_extra: Any,
) -> ChildProcess:
    """Start `argv` in a new session (own process group) and return its handle.

    With `die_with_parent`, the kernel sends `stop_signal` to the child when this process dies.
    """
    kwargs: dict[str, Any] = {}
    if run_as is not None:
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    popen = subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_child_setup(stop_signal if die_with_parent else None),
        **kwargs,
    )
    child = ChildProcess(name, popen, stop_signal=stop_signal, stop_timeout=stop_timeout, pidfile=pidfile)
    if pidfile is not None:
        try:
            write_pidfile(pidfile, popen.pid, argv[0], name=name, **pidfile_extra)
        except BaseException:
            child.stop()
            raise
    return child


def wait_for_http(url: str, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Poll `url` until the server answers anything HTTP (even an error status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            pass
        if not alive():
            raise RuntimeError(f"the process serving {url} exited before answering")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)
