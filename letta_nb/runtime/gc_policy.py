"""The garbage collector's young-generation threshold while a runtime is open.

Why: a turn allocates a few hundred container objects (messages, events, futures, handles), and CPython's
default collects the young generation every 700 net allocations, every tenth of those the middle one and,
when enough has survived, the whole heap. With a thousand agents in flight the heap holds their sessions
and queued turns, so each pass walks them all again for garbage that reference counting already freed.
Measured on ``bench concurrency --agents 1000 --messages 5`` (2 loaded cores, alternated, two rounds):
660 young, 60 middle and 6 full passes took 1.3-1.6 s of a 3.6-4.3 s run, and the runtime thread spent
0.64-0.66 ms of CPU a turn; with the young threshold at 10,000 it made 31-33, 2-3 and 1 passes and spent
0.48-0.50 ms (0.75x). 20,000 saved little more (0.46-0.48 ms); raising only the full-pass threshold
(700, 10, 100) saved nothing (the middle passes grew). ``gc.freeze()`` after the agents load saved less
(0.51-0.56 ms) and would pin the user's own objects for good.

So while any runtime of this process is open the young threshold is at least :data:`YOUNG_THRESHOLD`
(the others are left as they are), and when the last one closes the previous thresholds come back, unless
someone changed them meanwhile (theirs win). Cycles are still collected, a few thousand allocations later;
``gc.disable()`` and ``gc.collect()`` are never touched.
"""

from __future__ import annotations

import gc
import os
import threading

__all__ = ["YOUNG_THRESHOLD", "runtime_closed", "runtime_opened"]

YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_open = 0
_saved: tuple[int, ...] | None = None  # the thresholds before the first runtime opened
_set: tuple[int, ...] | None = None  # the thresholds this module set (restored only if still these)


def runtime_opened() -> None:
    """A runtime opened: raise the young threshold if it is below :data:`YOUNG_THRESHOLD`."""
    global _open, _saved, _set
    with _lock:
        _open += 1
        if _open > 1:
            return
        _saved = gc.get_threshold()
        if _saved[0] and _saved[0] < YOUNG_THRESHOLD:  # 0: the user turned automatic collection off
            gc.set_threshold(YOUNG_THRESHOLD, *_saved[1:])
            _set = gc.get_threshold()
        else:
            _set = None


def runtime_closed() -> None:
    """A runtime closed: the last one puts the thresholds back, if nobody else changed them meanwhile."""
    global _open, _saved, _set
    with _lock:
        if _open == 0:
            return
        _open -= 1
        if _open:
            return
        if _set is not None and _saved is not None and gc.get_threshold() == _set:
            gc.set_threshold(*_saved)
        _saved = _set = None


def _forget_in_child() -> None:
    """A forked child has none of its parent's runtimes: it gets the thresholds they raised back."""
    global _open
    _open = min(_open, 1)
    runtime_closed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
