"""Stopping a step's dbt work: when the step reaches its timeout, and when the run is cancelled.

dbt runs in-process (dbtRunner), in the thread that runs the step: the flow's main thread. Its
queries run in dbt's own worker threads, and that main thread waits on dbt's job queue. dbt
itself knows how to stop: on KeyboardInterrupt or SystemExit in that thread, `execute_nodes`
terminates its pool, cancels every open connection through the adapter
(`cancel_open_connections`: DuckDB's `interrupt()`, a cancel of each open Databricks cursor) and
joins its threads. So a stop is: cancel the in-flight queries now (dbt's own cancel comes only
after its pool stops taking work), then raise SystemExit in the waiting thread, and once dbt has
returned, turn it into what the stop means:

- the step's timeout (`step_timeout_seconds`): `StepTimedOut`, naming the step and its timeout.
  Before, Prefect's task timeout raised inside dbt, which caught it as a failure without a
  message and left its threads and the warehouse query running;
- SIGTERM (a cancel from the UI: the worker terminates the run's process): Prefect's own SIGTERM
  handler runs next, so the engine marks the run Cancelled or Crashed as it would have.

A blocked thread only runs Python when a signal wakes it: in the main thread the timeout is
delivered as a signal (WAKE_SIGNAL) to it. Elsewhere (a step run off the main thread) the
exception is set on that thread, and cancelling its queries is what lets it run again.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from prefect.logging import get_logger

from flows.errors import RunFailure

WAKE_SIGNAL = signal.SIGUSR1  # the step's own thread, woken at its timeout (nothing else here uses it)
logger = get_logger("lakehouse.stop")


class StepTimedOut(RunFailure):
    def __init__(self, step: str, seconds: float):
        super().__init__(f"{step} timed out after {seconds:g} s (step_timeout_seconds={seconds:g}): "
                         "its dbt queries were cancelled and dbt's threads stopped")
        self.step = step
        self.seconds = seconds


class _StopDbt(SystemExit):
    """What dbt sees: its `except (KeyboardInterrupt, SystemExit)` cancels connections and joins."""


def cancel_open_queries() -> list[str]:
    """Cancel every in-flight query of every adapter dbt has loaded in this process; the connection names."""
    try:
        from dbt.adapters.factory import FACTORY
    except ImportError:
        return []
    cancelled: list[str] = []
    adapters: list[Any] = list(FACTORY.adapters.values())  # concrete BaseAdapters, typed as a protocol
    for adapter in adapters:
        try:
            if adapter.is_cancelable():
                cancelled += [name for name in adapter.cancel_open_connections() if name]
        except Exception as error:  # noqa: BLE001 - dbt's own cancel, after its pool stops, tries again
            logger.warning("Cancelling the open %s connections failed: %s: %s", adapter.type(),
                           type(error).__name__, error)
    return cancelled


class StepGuard:
    """The stop state of the step running now: its deadline, and whether dbt is in flight."""

    def __init__(self, step: str, seconds: float, thread: threading.Thread):
        self.step = step
        self.seconds = seconds
        self.thread = thread
        self.lock = threading.Lock()
        self.reason: Optional[str] = None  # "timeout" | "terminated"
        self.in_dbt = 0
        self.closed = False
        self.previous_term: Any = None  # the SIGTERM handler before ours (Prefect's)

    # -- the timer thread ------------------------------------------------------------------
    def expire(self) -> None:
        with self.lock:
            if self.closed or self.reason:
                return
            self.reason = "timeout"
            in_dbt = self.in_dbt
        logger.warning("%s reached step_timeout_seconds=%g: cancelling its dbt queries.", self.step, self.seconds)
        if in_dbt:
            cancel_open_queries()
        if self.thread is threading.main_thread():
            signal.pthread_kill(self.thread.ident or 0, WAKE_SIGNAL)
        elif self.thread.ident:
            exception = _StopDbt if in_dbt else StepTimedOut
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident), ctypes.py_object(exception))

    # -- signal handlers, in the main thread -----------------------------------------------
    def on_wake(self, signum: int, frame: Any) -> None:
        if self.reason != "timeout" or self.closed:
            return
        if self.in_dbt:
            raise _StopDbt(f"{self.step} timed out")
        raise StepTimedOut(self.step, self.seconds)

    def on_term(self, signum: int, frame: Any) -> None:
        if self.in_dbt and not self.closed:
            self.reason = "terminated"
            logger.warning("SIGTERM during %s: cancelling its dbt queries before the run ends.", self.step)
            cancel_open_queries()
            raise _StopDbt(f"{self.step} terminated")
        _call(self.previous_term, signum, frame)

    # -- after dbt returned ----------------------------------------------------------------
    def raise_if_stopped(self) -> None:
        if self.reason == "timeout":
            raise StepTimedOut(self.step, self.seconds)
        if self.reason == "terminated":
            _call(self.previous_term, signal.SIGTERM, None)
            raise SystemExit(128 + signal.SIGTERM)  # the previous handler ignored it: end as SIGTERM would


def _call(handler: Any, signum: int, frame: Any) -> None:
    if callable(handler):
        handler(signum, frame)
    elif handler in (signal.SIG_DFL, None):
        raise SystemExit(128 + signum)


_current: Optional[StepGuard] = None


@contextmanager
def step_deadline(step: str, seconds: Optional[float]) -> Iterator[StepGuard]:
    """Run a step with its timeout; its dbt work, if any, is stopped at the deadline or on SIGTERM."""
    global _current
    guard = StepGuard(step, seconds or 0, threading.current_thread())
    main = guard.thread is threading.main_thread()
    previous_wake: Callable | int | None = None
    if main:
        guard.previous_term = signal.signal(signal.SIGTERM, guard.on_term)
        previous_wake = signal.signal(WAKE_SIGNAL, guard.on_wake)
    timer = threading.Timer(seconds, guard.expire) if seconds else None
    if timer:
        timer.daemon = True
        timer.start()
    outer, _current = _current, guard
    try:
        yield guard
    finally:
        if timer:
            timer.cancel()
        with guard.lock:
            guard.closed = True
        _current = outer
        if main:
            signal.signal(signal.SIGTERM, guard.previous_term)
            signal.signal(WAKE_SIGNAL, previous_wake)


@contextmanager
def dbt_invocation() -> Iterator[None]:
    """Around one dbt command: a stop now cancels its queries; afterwards it raises what it means."""
    guard = _current
    if guard is None:
        yield
        return
    with guard.lock:
        guard.in_dbt += 1
    try:
        guard.raise_if_stopped()  # the deadline passed between two commands of the step: start none
        yield
    except _StopDbt:
        pass  # raised into our own code around dbtRunner rather than into dbt: same meaning
    finally:
        with guard.lock:
            guard.in_dbt -= 1
    guard.raise_if_stopped()
