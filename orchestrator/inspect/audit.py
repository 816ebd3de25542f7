"""The end state of a run, read from its files: where the directory homes each user, what each
mailbox holds, which locks the stores still hold, which moves are unfinished.

`xcon check` ends its verdict with this, as Jepsen's checkers end with a final read: the logs
say what each node decided, the mailboxes say what is there. It reads the files the nodes
write (Maildirs, the stores' locks.json, the directory's file, the orchestrator's journal),
which a person can read too, so it works on a stopped cluster as on a running one; on a running
one it sees what is on disk, so run it after `xcon wait`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.config import ClusterConfig, Settings, node_names
from nodes.directory.node import CHANGES, DirectoryFile
from nodes.ims import outbound
from nodes.mta import wal
from nodes.logs import last_value
from nodes.records import DamagedFile
from nodes.imap.record import matches, removed
from nodes.store.maildir import read_move_state, read_store
from protocol.names import POSTMASTER, is_derived

from orchestrator import journal


@dataclass
class EndState:
    homes: dict[str, str]  # alias -> home server, as the directory has it
    boxes: dict[tuple[str, str], Counter] = field(default_factory=dict)  # (server, alias) -> msg_id -> copies
    locks: list[dict[str, Any]] = field(default_factory=list)  # {"server", "mailbox", "owner", "incoming"}
    unfinished: set[str] = field(default_factory=set)  # move ids the journal has not closed
    # (msg_id, outside address) -> how many times an IMS relayed it to the smarthost (nodes.ims)
    relayed: Counter = field(default_factory=Counter)
    # messages still on their way: queued in an MTA's queue log with a pair not final, or held by
    # an IMS (to relay, or to hand back): a pair whose report is one of them is pending, not lost
    waiting: set[str] = field(default_factory=set)
    # what users did over IMAP: (server, alias) -> {msg_id: a folder of theirs it is in}; and by
    # Dovecot's record, alias -> {Message-ID as logged: the folder they last expunged it from, once
    # no folder held it}
    filed: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    expunged: dict[str, dict[str, str]] = field(default_factory=dict)

    def copies(self, alias: str, msg_id: str) -> int:
        """How many times `msg_id` is in `alias`'s mailbox, on the server the directory homes it; for
        an address outside the organisation, how many times it left for it."""
        if "@" in alias:
            return self.relayed[(msg_id, alias)]
        home = self.homes.get(alias)
        box = self.boxes.get((home, alias)) if home else None
        return box[msg_id] if box else 0

    def by_user(self, alias: str, msg_id: str, message_ids: list[str]) -> str | None:
        """What `alias` did with a message that is not in their mailbox's own folder: filed it in a
        folder of theirs, or expunged it over IMAP (Dovecot's record, by the message's Message-ID,
        one of `message_ids`); None if neither is known. The user's act, not a loss."""
        home = self.homes.get(alias)
        folder = self.filed.get((home, alias), {}).get(msg_id) if home else None
        if folder:
            return f"filed by {alias} in their folder {folder}"
        for logged, box in self.expunged.get(alias, {}).items():
            if any(matches(logged, m) for m in message_ids):
                return f"expunged by {alias} over IMAP from {box} (Dovecot's log)"
        return None

    def kept(self, alias: str, msg_id: str, message_ids: list[str]) -> tuple[int, str | None]:
        """How many copies of `msg_id` count as in `alias`'s mailbox (copies), and the user's act
        when there are none but the user filed it away or expunged it (by_user): then it counts
        once. Only the organisation's users act over IMAP."""
        found = self.copies(alias, msg_id)
        if found or "@" in alias:
            return found, None
        act = self.by_user(alias, msg_id, message_ids)
        return (1, act) if act else (0, None)

    def homed_copies(self, msg_id: str) -> int:
        """How many times `msg_id` is in any mailbox on the server the directory homes it (for a
        report whose originator only its id is known of)."""
        return sum(box[msg_id] for (server, alias), box in self.boxes.items() if self.homes.get(alias) == server)

    def postmaster_copies(self, msg_id: str) -> int:
        """How many times `msg_id` is in the postmaster mailboxes, every server's."""
        return sum(box[msg_id] for (_, alias), box in self.boxes.items() if alias == POSTMASTER)

    def stale_locks(self) -> list[dict[str, Any]]:
        """Locks no unfinished move holds: mail for that mailbox would wait until it expires."""
        return [lock for lock in self.locks if lock["owner"] not in self.unfinished]


def available(run_dir: Path) -> bool:
    """Whether `run_dir` is a cluster's (real or simulated), whose end state a verdict reads."""
    return any((run_dir / name).exists() for name in ("cluster.json", "sim.json", "directory"))


def read(run_dir: Path) -> EndState:
    """The end state of `run_dir` (see `available`), read by the rules its nodes read it by at
    start (`xcon up`'s too): DamagedFile for a file that is missing where the run's logs say it
    was written, or does not read, or a record log damaged in the middle (the journal, the
    directory's change log). A verdict is never given from less than a node would start on."""
    logs = run_dir / "logs"
    reached = last_value(logs / "directory.jsonl", "usn") or 0
    path = run_dir / "directory" / "directory.json"
    if not path.exists() and (logs / "directory.jsonl").exists():
        raise DamagedFile(path, "missing, though logs/directory.jsonl says the directory ran: whom it homes where "
                                "is not known")
    directory, _, _, _, found = DirectoryFile(path, None, reached).read()
    if found.damaged:
        raise DamagedFile(path.with_name(CHANGES), found.describe(CHANGES))
    servers = servers_of(run_dir)
    missing = [s for s in servers if not (run_dir / "stores" / s).is_dir() and (logs / f"store.{s}.jsonl").exists()]
    if missing:
        raise DamagedFile(run_dir / "stores" / missing[0], "missing, though its store's log says it ran")
    read = {p.name: read_store(p) for p in sorted(p for p in (run_dir / "stores").glob("*") if p.is_dir())}
    stores = {server: (boxes, read_move_state(run_dir / "stores" / server)) for server, (boxes, _) in read.items()}
    if journal.vanished(run_dir / journal.PATH, logs / "orchestrator.jsonl") is not None:
        raise DamagedFile(run_dir / journal.PATH, "missing or empty, though the orchestrator's log says it journaled "
                          "steps: which moves are unfinished is not known (`xcon up --accept-damage` starts the "
                          "orchestrator on a new one, and names the moves it leaves for you)")
    found = journal.scan((run_dir / journal.PATH).read_bytes() if (run_dir / journal.PATH).exists() else b"")
    if found.damaged:
        raise DamagedFile(run_dir / journal.PATH, found.describe(journal.PATH.name) + "; the orchestrator keeps it "
                          "aside and takes up what reads when it starts (`xcon up --accept-damage`)")
    state = assemble(directory, stores, found.records)
    for server, (_, filed) in read.items():
        state.filed.update(((server, box), ids) for box, ids in filed.items())
    state.expunged = removed(sorted(logs.glob("dovecot.*.log")))
    for folder in sorted(p for p in run_dir.glob("ims/*") if p.is_dir()):
        found = outbound.look(folder)
        damage = found.damage(run_dir)
        if damage:
            raise DamagedFile(run_dir / "ims" / folder.name, f"{'; '.join(damage)}; its IMS keeps it aside and takes "
                                                             "up what reads when it starts (`xcon up --accept-damage`)")
        add_ims(state, found.lines, found.items)
    return state


def add_ims(state: EndState, lines: list[dict[str, Any]], items: dict[str, dict[str, Any]]) -> None:
    """What an IMS's queue holds: the pairs it relayed, and the messages it still holds (its
    items, by key, that no line of its log ended)."""
    state.relayed.update((r["msg_id"], r["rcpt"]) for r in lines if "returned" not in r)
    ended = {outbound.key_of(r["msg_id"], r["rcpt"]) for r in lines}
    state.waiting.update(r["msg_id"] for key, r in items.items() if key not in ended)


def assemble(directory: dict[str, Any], stores: dict[str, tuple[dict[str, Counter], dict[str, Any]]],
             records: list[dict[str, Any]]) -> EndState:
    """The end state from what the files hold: the directory's state, each store's mailboxes
    (message ids and copies) and move state (locks.json), the journal's records. The simulator's
    memory holds the same, and is judged through this too."""
    state = EndState({alias: r["home_server"] for alias, r in directory.get("recipients", {}).items()})
    for server, (boxes, saved) in sorted(stores.items()):
        state.boxes.update(((server, box), ids) for box, ids in boxes.items())
        incoming = set(saved.get("incoming", ()))
        state.locks += [{"server": server, "mailbox": m, "owner": o, "incoming": m in incoming}
                        for m, o in saved.get("locks", {}).items() if (server, m) in state.boxes]
    state.unfinished = journal.unfinished(records)
    return state


Pairs = dict[tuple[str, str], tuple[str | None, str | None]]  # (msg_id, rcpt) -> (sender or None, alt_of)


def durable(run_dir: Path, state: EndState | None) -> Pairs:
    """The pairs the durable records of `run_dir` show were accepted, logged or not: each MTA's
    queue log (its queued messages and the pairs it still remembers) and the messages in the
    mailboxes of `state`. DamagedFile for a queue log damaged in the middle (not yet kept aside)."""
    logs = {}
    for server in servers_of(run_dir):
        path = run_dir / "mta" / server / "queue.wal"
        if wal.vanished(path, run_dir / "logs" / f"mta.{server}.jsonl") is not None:
            raise DamagedFile(path, "missing or empty, though its MTA's log says it held records: the queue it held "
                                    "is not known (`xcon up --accept-damage` starts the MTA on an empty one and names "
                                    "what it held)")
        if not path.exists():
            continue
        recovered = wal.recover(path.read_bytes())[0]
        if recovered.damage:
            raise DamagedFile(path, "damaged in the middle; its MTA keeps it aside and takes up what reads when it "
                                    "starts (`xcon up --accept-damage`)")
        logs[path.parent.name] = recovered
        if state is not None:
            state.waiting.update(m.msg_id for m in recovered.queued if not m.done)
    return pairs_in(logs, state)


def pairs_in(logs: dict[str, Any], state: EndState | None) -> Pairs:
    """The pairs queue logs (wal.Recovered, by server) and an end state's mailboxes hold."""
    pairs: Pairs = {}
    for recovered in logs.values():
        for msg in recovered.queued:
            if msg.ndr_for is None:
                for p in msg.pairs.values():
                    pairs.setdefault((msg.msg_id, p.rcpt), (msg.sender, p.alt_of))
        for msg_id, hops, _ in recovered.remembered:
            if not is_derived(msg_id):
                for rcpt in hops:
                    pairs.setdefault((msg_id, rcpt), (None, None))
    for (_, alias), ids in [*(state.boxes.items() if state else ()), *(state.filed.items() if state else ())]:
        for msg_id in ids:
            if not is_derived(msg_id):
                pairs.setdefault((msg_id, alias), (None, None))
    return pairs


def servers_of(run_dir: Path) -> list[str]:
    """The servers whose MTAs' queue logs a verdict reads: cluster.json's (or a simulated run's),
    and any other folder of mta/."""
    named = [n.split(".", 1)[1] for n in nodes_of(run_dir) if n.startswith("mta.")]
    return sorted({*named, *(p.name for p in (run_dir / "mta").glob("*") if p.is_dir())})


def settings_of(run_dir: Path) -> Settings | None:
    """The settings `run_dir` ran with (cluster.json's, or a simulated run's); None if neither
    reads (nodes_of says so where it matters)."""
    try:
        if (run_dir / "cluster.json").exists():
            return ClusterConfig.load(run_dir).settings
        import json

        return Settings.from_json(json.loads((run_dir / "sim.json").read_text())["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def nodes_of(run_dir: Path) -> list[str]:
    """The nodes whose logs a verdict on `run_dir` needs: cluster.json's, or a simulated run's.
    DamagedFile if cluster.json is there but does not read: which logs must exist is not known."""
    if (run_dir / "cluster.json").exists():
        try:
            return list(ClusterConfig.load(run_dir).nodes)
        except (OSError, ValueError) as exc:
            raise DamagedFile(run_dir / "cluster.json", str(exc)) from None
    settings = settings_of(run_dir)  # a simulated run's
    return node_names(settings.servers, settings.smtp, settings.imap) if settings is not None else []
