"""Move User's copy, page by page: each page exported from the source and imported on the target,
the next page exported while this one is imported (read-ahead), so the two stores work at once.

What a page asks for, as plain requests (to, type, body) worked out from the move alone; the
move core (orchestrator.move) sends them and waits on their answers."""

from __future__ import annotations

from typing import Any

from protocol import messages

from .move_state import EXPORT_PAGE, Move

Request = tuple[str, str, dict[str, Any]]


def export_request(move: Move) -> Request:
    """Export the page after the move's cursor from the source."""
    return f"store.{move.source}", "store.export", {"mailbox": move.alias, "after": move.cursor, "limit": EXPORT_PAGE}


def import_request(move: Move, page: messages.StoreExported) -> Request:
    """Import an exported page on the target; the move's cursor moves past it, and `more` says
    whether a next page is to be read ahead meanwhile."""
    move.cursor = page.next if page.next is not None else move.cursor  # the key to ask after
    move.more = page.next is not None
    move.importing = len(page.messages)
    return f"store.{move.target}", "store.import", {"mailbox": move.alias, "owner": move.move_id,
                                                    "messages": page.messages}


def next_page(move: Move) -> tuple[str, Any]:
    """The next page is due: ("import", the page the read-ahead brought), ("await", the
    read-ahead still on its way: its answer is now the one the step waits for), or ("export",
    None): nothing was asked yet."""
    if move.page is not None:
        page, move.page = move.page, None
        return "import", page
    if move.ahead is not None:
        ahead, move.ahead = move.ahead, None
        return "await", ahead
    return "export", None
