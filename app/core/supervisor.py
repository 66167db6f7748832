"""Restarting children that die, and stopping everything in reverse order exactly once.

A supervised child that dies on its own (a crash, the OOM killer, kill -9) is started again after a delay that
doubles with each consecutive failure (RESTART_BACKOFF), and every exit and restart is reported. The first
SIGINT or SIGTERM inside `with Supervisor()` becomes ShutdownRequested; everything registered is then stopped
in reverse order. The children themselves are app.core.processes' ChildProcess.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from app.core.processes import ChildProcess, spawn

log = logging.getLogger("imagingx.supervisor")


class ShutdownRequested(Exception):
    """SIGINT or SIGTERM arrived: stop everything we started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ChildExited(Exception):
    """A supervised child stopped on its own."""

    def __init__(self, name: str, returncode: int) -> None:
        super().__init__(f"{name} exited with code {returncode}")
        self.name = name
        self.returncode = returncode


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart: `initial` doubled per consecutive failure up to `maximum`. A child that stayed up
    `healthy_after` seconds counts as healthy again, so its next death restarts it after `initial`."""

    initial: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number `failures` (1 for the first) in a row."""
        return min(self.maximum, self.initial * 2.0 ** max(0, failures - 1))


RESTART_BACKOFF = Backoff()


class Supervised:
    """One restartable child: `start()` launches it and returns its handle, `stop()` ends the current one.

    `after_restart` runs after every successful restart (not the first start), e.g. to re-send work that a
    restarted Redis lost. Its failure is reported but does not count as a failed restart.
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], ChildProcess],
        *,
        stop: Callable[[], object] | None = None,
        backoff: Backoff = RESTART_BACKOFF,
        after_restart: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop
        self.backoff = backoff
        self.after_restart = after_restart
        self.child: ChildProcess | None = None
        self.started_at = 0.0
        self.failures = 0  # consecutive deaths or failed starts since it was last healthy
        self.restarts = 0  # restarts since the supervisor started it
        self.restart_at: float | None = None  # when a pending restart is due (monotonic)

    def start(self) -> ChildProcess:
        self.child = self._start()
        self.started_at = time.monotonic()
        return self.child

    def stop(self) -> None:
        self.restart_at = None
        if self._stop is not None:
            self._stop()
        elif self.child is not None:
            self.child.stop()

    def exit_code(self) -> int | None:
        """The exit code of the current child if it died (None while it runs or while a restart is pending)."""
        if self.child is None or self.restart_at is not None:
            return None
        return self.child.poll()


class Supervisor:
    """Owns everything its user (`imagingx serve`) starts, restarts children that die, and stops it all in
    reverse order exactly once.

    Inside `with Supervisor() as s:` the first SIGINT/SIGTERM raises ShutdownRequested wherever the main thread
    is (even mid-startup); later signals are ignored so the shutdown itself cannot be interrupted. `report`
    receives one line per child exit and per restart (serve prints them next to its other output).
    """

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self._stops: list[tuple[str, Callable[[], object]]] = []
        self._children: list[ChildProcess] = []
        self._supervised: list[Supervised] = []
        self._signalled = False
        self._previous: dict[int, Any] = {}
        self._report = report or log.warning

    def __enter__(self) -> Supervisor:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signalled:
            log.info("already stopping (%s ignored)", signal.Signals(signum).name)
            return
        self._signalled = True
        raise ShutdownRequested(signum)

    def on_stop(self, name: str, stop: Callable[[], object]) -> None:
        self._stops.append((name, stop))

    def spawn(self, name: str, argv: Sequence[str], **kwargs: Any) -> ChildProcess:
        child = spawn(name, argv, **kwargs)
        self._children.append(child)
        self.on_stop(name, child.stop)
        return child

    def supervise(
        self,
        name: str,
        start: Callable[[], ChildProcess],
        *,
        stop: Callable[[], object] | None = None,
        backoff: Backoff = RESTART_BACKOFF,
        after_restart: Callable[[], object] | None = None,
    ) -> Supervised:
        """Start a child now and restart it with backoff whenever it dies while `watch()` runs. `stop` (default:
        stop the current child) runs at shutdown, in reverse order of registration like `on_stop`."""
        supervised = Supervised(name, start, stop=stop, backoff=backoff, after_restart=after_restart)
        self.on_stop(name, supervised.stop)  # registered first: a start interrupted by a signal is cleaned up
        supervised.start()
        self._supervised.append(supervised)
        return supervised

    def watch(self, interval: float = 0.2) -> NoReturn:
        """Block until a signal arrives (ShutdownRequested); restart supervised children that die. An unsupervised
        child that exits raises ChildExited."""
        while True:
            for child in self._children:
                code = child.poll()
                if code is not None:
                    raise ChildExited(child.name, code)
            for supervised in self._supervised:
                self._check(supervised)
            time.sleep(interval)

    def _check(self, supervised: Supervised) -> None:
        now = time.monotonic()
        code = supervised.exit_code()
        if code is not None:
            if now - supervised.started_at >= supervised.backoff.healthy_after:
                supervised.failures = 0
            supervised.failures += 1
            delay = supervised.backoff.delay(supervised.failures)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            self._report(f"{supervised.name} exited ({how}); restarting in {delay:.1f} s")
            supervised.restart_at = now + delay
            return
        if supervised.restart_at is None or now < supervised.restart_at:
            return
        # the old child's whole process group goes before the new one starts (a worker's pool processes,
        # PostgreSQL's backends), so nothing of it holds a port, a lock or a job
        if supervised.child is not None:
            supervised.child.stop()
        try:
            child = supervised.start()
        except Exception as error:
            supervised.failures += 1
            delay = supervised.backoff.delay(supervised.failures)
            self._report(f"{supervised.name} could not be restarted ({error}); trying again in {delay:.1f} s")
            supervised.restart_at = time.monotonic() + delay
            return
        supervised.restart_at = None
        supervised.restarts += 1
        self._report(f"{supervised.name} restarted (pid {child.pid}, restart {supervised.restarts})")
        if supervised.after_restart is not None:
            try:
                supervised.after_restart()
            except Exception as error:
                self._report(f"after restarting {supervised.name}: {error}")

    def stop_all(self) -> None:
        self._signalled = True  # from here on, signals must not interrupt the shutdown
        while self._stops:
            name, stop = self._stops.pop()
            log.info("stopping %s", name)
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", name)
