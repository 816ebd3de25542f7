"""A store as both worlds host it: its core on the mailboxes its storage gives (Maildirs on
disk, MemoryMaildirs in the simulator), and the answers that read messages back."""

from __future__ import annotations

from typing import Any

from protocol.messages import Carried, StoreExported

from ..core import DiskSpace, Reply
from ..host import Wiring
from ..mail import summarize
from ..node_settings import StoreSettings
from .actions import (
    CreateMailbox, DeleteMailbox, ExportPage, ListMailbox, PersistLocks, RenameMailbox, WriteMessage, msg_id_of,
)
from .core import StoreCore

PAGE_BYTES = 4 * 1024 * 1024


def listing(maildirs: Any, a: ListMailbox) -> list:
    """`store.listing`: a summary of each message in the mailbox."""
    messages = [{"name": n, **summarize(maildirs.read(a.mailbox, n))} for n in maildirs.names(a.mailbox)]
    return [Reply(a.peer, a.re, "store.listing", {"mailbox": a.mailbox, "messages": messages})]


def export_page(maildirs: Any, a: ExportPage) -> list:
    """`store.exported`: the next page of a move's copy, whole messages, far below the frame limit:
    every message of the mailbox and of its user's folders, with its folder and flags, by key
    (Maildirs.entries); `next` is the key to ask after, nil when this page ends the mailbox."""
    entries = [e for e in maildirs.entries(a.mailbox) if e[0] > a.after]
    messages, size, taken = [], 0, 0
    for key, folder, name, info in entries[: a.limit]:
        try:
            raw = maildirs.read(a.mailbox, name, folder)
        except FileNotFoundError:  # a reader expunged it since the listing: nothing to carry
            taken += 1
            continue
        if messages and size + len(raw) > PAGE_BYTES:
            break  # a page stays far below the frame limit, however large the messages
        messages.append(Carried(name, raw, msg_id_of(name) or "", folder, info))
        size += len(raw)
        taken += 1
    more = entries[taken - 1][0] if 0 < taken < len(entries) else None
    return [Reply(a.peer, a.re, "store.exported", StoreExported(a.mailbox, messages, more))]


def wiring(server: str, settings: StoreSettings, boot: str, maildirs: Any) -> Wiring:
    """The store of `server`, recovered from what `maildirs` holds."""
    mailboxes, state = maildirs.load()
    core = StoreCore(server, mailboxes, state.get("locks", {}), boot, state.get("incoming"), state.get("ended"),
                     settings.min_free_bytes, state.get("made"), state.get("staged"), state.get("soft_deleted"),
                     settings.soft_delete_ms)
    executors = {
        CreateMailbox: lambda a: maildirs.create(a.mailbox),
        WriteMessage: lambda a: maildirs.write(a.mailbox, a.name, a.raw, a.folder, a.info),
        DeleteMailbox: lambda a: maildirs.delete(a.mailbox),
        RenameMailbox: lambda a: maildirs.rename(a.source, a.mailbox),
        PersistLocks: lambda a: maildirs.save_state(a.state()),
        ListMailbox: lambda a: listing(maildirs, a),
        ExportPage: lambda a: export_page(maildirs, a),
    }
    return Wiring(core, executors, sync=maildirs.sync, deferred=(WriteMessage,),
                  probe=lambda: DiskSpace(maildirs.free_bytes()))
