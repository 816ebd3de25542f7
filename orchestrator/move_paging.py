"""Move User's copy, page by page: each page exported from the source and imported on the target,
the next page exported while this one is imported (read-ahead), so the two stores work at once."""

from __future__ import annotations

from typing import Any

from nodes.core import Send
from protocol import messages

from .move_state import EXPORT_PAGE, Move


class Paging:
    """The copy step's pages, for MoveCore (orchestrator.move), whose state they share."""

    ids: Any

    def _export(self, move: Move, now: float) -> list:
        return self._request(move, f"store.{move.source}", "store.export", self._export_body(move), now)

    def _export_body(self, move: Move) -> dict[str, Any]:
        return {"mailbox": move.alias, "after": move.cursor, "limit": EXPORT_PAGE}

    def _import(self, move: Move, page: messages.StoreExported, now: float) -> list:
        """Import an exported page on the target and, if there is more, export the next one
        meanwhile: the source store reads while the target store writes."""
        move.cursor = page.next if page.next is not None else move.cursor  # the key to ask after
        move.more = page.next is not None
        move.importing = len(page.messages)
        actions = self._request(move, f"store.{move.target}", "store.import",
                                {"mailbox": move.alias, "owner": move.move_id, "messages": page.messages}, now)
        if move.more:
            move.ahead = Send(f"store.{move.source}", "store.export", self._export_body(move), self.ids.next(),
                              move.move_id)
            actions.append(move.ahead)
        return actions

    def _next_page(self, move: Move, now: float) -> list:
        """The next page is due: import it if the read-ahead brought it, else wait for the
        read-ahead's answer as the step's own request (asked again if it never comes)."""
        if move.page is not None:
            page, move.page = move.page, None
            return self._import(move, page, now)
        if move.ahead is not None:  # asked already: its answer is now the one the step waits for
            ahead, move.ahead = move.ahead, None
            self._waiting(move, ahead.id, (ahead.to, ahead.type, ahead.body), now)
            return []
        return self._export(move, now)
