"""Group commit: many writers' transactions committed together, none answered before it.

A provisioning storm is bound by the registry's commit (one fsync on SQLite each), not by
signing. ``GroupCommitter`` runs submitted write functions on one thread of its own: it takes
every request waiting (up to ``max_batch``), runs each inside a SAVEPOINT of one transaction,
so a refused request is rolled back alone and changes nothing, then commits once and only then
wakes every caller. Durability is unchanged: ``submit`` returns (and a certificate may be
handed out) only after the commit that holds its rows; a failed commit fails every request in
it. The queue is bounded (``max_pending``); a full queue blocks the submitter, so a storm
waits instead of growing memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tether.cloud.registry.errors import ConcurrentChangeError
from tether.errors import TetherError

if TYPE_CHECKING:
    from tether.cloud.registry.base import RegistryBase

T = TypeVar("T")
_Item = tuple[Callable[[Session], Any], "Future[Any]", object]
# Takes a group's bulk items, returns per item a result, a TetherError, or None (not handled).
BulkWriter = Callable[[Session, list[object]], list[object]]
MAX_BATCH = 256
MAX_PENDING = 4096


class GroupCommitter:
    """One writer thread that commits queued write functions in groups."""

    def __init__(
        self,
        registry: RegistryBase,
        *,
        bulk: BulkWriter | None = None,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._registry = registry
        self._bulk = bulk
        self._max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="tether-group-commit", daemon=True)
        self._thread.start()
        self.batches = 0
        self.committed = 0

    def submit(self, work: Callable[[Session], T], *, bulk_item: object = None) -> T:
        """Run ``work(session)`` in the next group; its result once committed, or its error.

        ``bulk_item`` is offered to the bulk writer first (with the rest of the group's); what
        it does not handle runs through ``work``.
        """
        future: Future[T] = Future()
        self._queue.put((work, future, bulk_item))
        return future.result()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Item]) -> None:
        outcomes: dict[int, tuple[bool, Any]] = {}
        try:
            with self._registry._write() as session:
                self._bulk_part(session, group, outcomes)
                for index, (work, _, _) in enumerate(group):
                    if index in outcomes:
                        continue
                    try:
                        with session.begin_nested():
                            outcomes[index] = (True, work(session))
                    except TetherError as exc:
                        outcomes[index] = (False, exc)
                    except IntegrityError:  # another process wrote the same row first
                        outcomes[index] = (False, ConcurrentChangeError(
                            "A concurrent change to the registry conflicted with this one; "
                            "nothing was changed, retry."
                        ))  # fmt: skip
        except BaseException as exc:  # the commit failed: nothing of the group is durable
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.committed += len(group)
        for index, (_, future, _) in enumerate(group):
            ok, value = outcomes[index]
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _bulk_part(
        self, session: Session, group: list[_Item], outcomes: dict[int, tuple[bool, Any]]
    ) -> None:
        """Let the bulk writer take what it can; on any surprise the one-by-one path runs."""
        indexes = [i for i, item in enumerate(group) if item[2] is not None]
        if self._bulk is None or len(indexes) < 2:
            return
        try:
            with session.begin_nested():
                results = self._bulk(session, [group[i][2] for i in indexes])
        except (IntegrityError, TetherError):
            return  # rolled back to the savepoint: every request goes one by one
        for index, result in zip(indexes, results, strict=True):
            if isinstance(result, TetherError):
                outcomes[index] = (False, result)
            elif result is not None:
                outcomes[index] = (True, result)
