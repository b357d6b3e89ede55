"""Signals that stop a training run as a KeyboardInterrupt which cannot get lost.

Python runs a signal handler between two bytecodes of the main thread, wherever they happen to be.
An exception raised there while a garbage-collector callback (JAX registers one) or a `__del__`
runs is printed as "Exception ignored in ..." and dropped: Ctrl-C or a job scheduler's SIGTERM
would then be lost and the run would go on. So the handler here both raises at once (a signal
stops a long compile or evaluation) and records the signal, and the training loop calls `check()`
once a step, which raises it again if the first raise was dropped. While the block runs, Python's
report of such a dropped raise ("Exception ignored in ...", a traceback from inside JAX) is
silenced: the signal is not lost, so there is nothing to report.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence


@contextlib.contextmanager
def stop_on(signals: Sequence[signal.Signals]) -> Iterator[Callable[[], None]]:
    """Within the block each of `signals` raises KeyboardInterrupt; yields `check`, which raises it
    (again) once one has arrived. The previous handlers come back on exit.

    Only the main thread may set handlers, and only it runs them: from any other thread the
    signals keep their handlers and `check` never raises.
    """
    received: list[signal.Signals] = []

    def check() -> None:
        if received:
            raise KeyboardInterrupt(received[0].name)

    def handler(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum))
        check()

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def unraisable(report) -> None:  # our own KeyboardInterrupt, dropped in a callback: check() has it
        if not (received and isinstance(report.exc_value, KeyboardInterrupt)):
            previous_hook(report)

    previous = {s: signal.signal(s, handler) for s in signals}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield check
    finally:
        sys.unraisablehook = previous_hook
        for s, h in previous.items():  # None: a handler not set from Python, i.e. the default
            signal.signal(s, signal.SIG_DFL if h is None else h)
