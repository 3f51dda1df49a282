"""Change notices of agents: what tells idle displays (the widget's memory panel) that an agent changed.

Kept apart from the leases themselves (runtime/leases.py) because they carry no correctness: a notice may come
late or never, and the version check at a turn's start decides what a turn sees. A notice is built when a turn or
a change of an agent ends (the lease's ``done``), handed to this process's subscribers on the runtime's loop, and
published to other processes through the store's channel (PostgreSQL's NOTIFY, store/postgres/notices.py) or
Redis pub/sub (runtime/redis_leases.py overrides these methods).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from letta_nb.runtime.leases import Lease

__all__ = ["ChangeNotices"]


class ChangeNotices:
    """The notice half of :class:`~letta_nb.runtime.leases.AgentLeases` (whose ``__init__`` sets the fields below)."""

    holder: str
    pid: int
    host: str
    notices: Any  # the store's channel to other processes, or None
    _subscribers: list[Callable[[dict[str, Any]], Any]]

    def subscribe(self, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` on the runtime's loop after each turn or change of an agent ends, with
        ``{"agent_id", "last_seq", "holder", "pid", "host", "at"}``: this process's changes (and every other
        process's: with Redis from its pub/sub channel, on PostgreSQL without it by NOTIFY). For idle displays
        (the widget's memory panel): a notice may be late or lost, so a display re-reads the store; the version
        check at turn start decides. The callback must be quick (it runs on the loop). Returns a function that
        unsubscribes."""
        self._subscribers.append(callback)
        if self.notices is not None:  # starts (once) the LISTENing connection; callable from any thread
            self.notices.listen(self._notify, self.holder)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def _changed(self, lease: Lease) -> None:
        if not self._subscribers and self.notices is None:
            return  # nobody to tell: a turn's end builds no notice
        notice = {"agent_id": lease.agent_id, "last_seq": lease.last_seq, "holder": self.holder, "pid": self.pid,
                  "host": self.host, "at": time.time()}
        self._notify(notice)
        if self.notices is not None:  # after the commit (done() follows it); queued, never awaited here
            self.notices.publish(notice)

    def _notify(self, notice: dict[str, Any]) -> None:
        for callback in list(self._subscribers):
            with contextlib.suppress(Exception):  # a display's bug must not break a turn
                callback(notice)
