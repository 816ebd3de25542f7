"""The store node process: `python -m nodes.store --run-dir D --name store.<server>`."""

from __future__ import annotations

from ..config import free_bytes
from ..core import DiskSpace, Reply
from ..mail import summarize
from ..runtime import Runtime, boot_id, node_args
from .core import (
    CreateMailbox, DeleteMailbox, ExportPage, ListMailbox, PersistLocks, StoreCore, WriteMessage, msg_id_of,
)
from .maildir import Maildirs

PAGE_BYTES = 4 * 1024 * 1024


def main() -> None:
    args = node_args("store")
    server = args.config.nodes[args.name]["server"]
    maildirs = Maildirs(args.run_dir / "stores" / server, args.config.settings.fsync)
    mailboxes, state = maildirs.load()
    core = StoreCore(server, mailboxes, state.get("locks", {}), boot_id(), state.get("incoming"), state.get("ended"),
                     args.config.settings.min_free_bytes)

    def list_mailbox(a: ListMailbox) -> list:
        messages = [{"name": n, **summarize(maildirs.read(a.mailbox, n))} for n in maildirs.names(a.mailbox)]
        return [Reply(a.peer, a.re, "store.listing", {"mailbox": a.mailbox, "messages": messages})]

    def export_page(a: ExportPage) -> list:
        names = [n for n in maildirs.names(a.mailbox) if n > a.after]
        messages, size = [], 0
        for n in names[: a.limit]:
            raw = maildirs.read(a.mailbox, n)
            if messages and size + len(raw) > PAGE_BYTES:
                break  # a page stays far below the frame limit, however large the messages
            messages.append({"name": n, "msg_id": msg_id_of(n) or "", "raw": raw})
            size += len(raw)
        more = messages[-1]["name"] if len(names) > len(messages) else None
        return [Reply(a.peer, a.re, "store.exported", {"mailbox": a.mailbox, "messages": messages, "next": more})]

    executors = {
        CreateMailbox: lambda a: maildirs.create(a.mailbox),
        WriteMessage: lambda a: maildirs.write(a.mailbox, a.name, a.raw),
        DeleteMailbox: lambda a: maildirs.delete(a.mailbox),
        PersistLocks: lambda a: maildirs.save_state(a.locks, a.incoming, a.ended),
        ListMailbox: list_mailbox,
        ExportPage: export_page,
    }
    Runtime(args.name, args.config, core, executors, sync=maildirs.sync, deferred=(WriteMessage,),
            probe=lambda: DiskSpace(free_bytes(maildirs.root))).run()


if __name__ == "__main__":
    main()
