"""Bringing the database's forwards up to date with the node (spec feature 20).

Two marks live in the database:
* "created": the largest created_index read. Pages of `listforwards index=created`
  start after it, so memory stays bounded on any history size and a restart resumes.
* "updated": the node's updated counter already covered. A forward still `offered`
  when its page was read gets an updated_index when it settles (also while we are
  down), so paging `index=updated` after this mark finds it. On the very first run the
  mark is the node's counter *before* the first page is read and is stored at once:
  every settlement up to it is visible in the created pages; every later one is paged.
Each page is one transaction with its mark, so a kill at any point loses nothing and
stores nothing twice (the key is Core Lightning's (in_channel, in_htlc_id)). The next
page is requested before the current one is stored, so the node and the database work
at the same time; at most two pages are in memory.
"""
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from modules.database import Database
from modules.node import INVALID_PARAMS, UNKNOWN_COMMAND, NodeAdapter, NodeError, parse_forward

CREATED = "created"
UPDATED = "updated"
STORED_STATUSES = ("settled", "local_failed")


@dataclasses.dataclass
class SyncResult:
    rows_added: int = 0
    pages: int = 0
    seconds: float = 0.0
    paginated: bool = True

    def to_dict(self) -> dict:
        return {"rows_added": self.rows_added, "pages": self.pages,
                "seconds": round(self.seconds, 3), "paginated": self.paginated}


class ForwardSync:
    def __init__(self, node: NodeAdapter, db: Database, page_size: int,
                 log: Callable[[str], None] = lambda message: None,
                 stopping: Callable[[], bool] = lambda: False):
        self.node = node
        self.db = db
        self.page_size = page_size
        self.log = log
        self.stopping = stopping     # the plugin is shutting down: no further page
        self.paginated: Optional[bool] = None   # learnt on the first call

    def catch_up(self) -> SyncResult:
        began = time.monotonic()
        result = SyncResult()
        if self.paginated is not False:
            try:
                self._ensure_updated_mark()
                self._page(CREATED, result)
                if not self.stopping():
                    self._page(UPDATED, result)
                self.paginated = True
            except NodeError as e:
                if e.code != INVALID_PARAMS or self.paginated:
                    raise
                self.paginated = False
                self.log(f"listforwards pagination is not supported by this node ({e.message});"
                         " reading all settled forwards in one call")
        if self.paginated is False:
            result.paginated = False
            result.pages += 1
            forwards = [parse_forward(row) for row in self.node.all_forwards()]
            result.rows_added += self.db.store_forwards(forwards, authoritative=True)
        result.seconds = time.monotonic() - began
        return result

    def _ensure_updated_mark(self) -> None:
        if self.db.get_mark(UPDATED) is not None:
            return
        try:
            counter = self.node.current_forward_index(UPDATED)
        except NodeError as e:
            if e.code not in (UNKNOWN_COMMAND, INVALID_PARAMS):
                raise
            counter = 0  # no `wait`: page every update once, still correct
        self.db.set_mark(UPDATED, counter)

    def _page(self, index: str, result: SyncResult) -> None:
        """Pages from the mark on; the node builds the next page while this one is stored."""
        index_field = f"{index}_index"
        start = (self.db.get_mark(index) or 0) + 1
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as prefetch:
            pending = prefetch.submit(self.node.forwards_page, index, start, self.page_size)
            while True:
                rows = pending.result()
                result.pages += 1
                marks = [row[index_field] for row in rows if row.get(index_field) is not None]
                top = max(marks) if marks else None
                more = len(rows) >= self.page_size and top is not None and not self.stopping()
                if more:
                    pending = prefetch.submit(self.node.forwards_page, index, top + 1, self.page_size)
                # only settled and local_failed forwards are stored: the others are not even parsed
                forwards = [parse_forward(row) for row in rows if row.get("status") in STORED_STATUSES]
                result.rows_added += self.db.store_forwards(forwards, {index: top} if top else None,
                                                            authoritative=True)
                rows = forwards = None   # let this page go before the next one is read
                if not more:
                    return
