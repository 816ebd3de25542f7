"""Every wire message of xcon, declared once (the Maelstrom habit: one page is the protocol).

A message type is a name and its body fields. Each field has a type from the small set below;
`Opt(t)` admits nil. Nodes import these names; nothing else invents a message shape.
Bump VERSION when a field changes meaning or a required field is added.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = 9  # 2: owners on import and delete, store.end_move, idempotent dir.modify, orch.abort; 3: error codes;
# 4: priority on mta.submit and mta.transfer; a delivery's time-out (store.deliver expires_at);
# 5: store.create's owner (a legacy move's live target), the outcome soft_deleted;
# 6: a transfer's rcpt counts routing cycles (not hops) for loops; ids an MTA derives carry `~`
# marks a client's cannot (protocol.names); the postmaster mailbox; a move's state says held;
# 7: a frame's clock is a hybrid logical clock (protocol.hlc), below 2**62; fault.clock; mta.queue;
# 8: mail from and to outside the organisation: mta.submit_raw, mta.lookup, ims.outbound
# 9: ims.outbound carries the message's acceptance, priority and time-out; mta.relay_failed;
# imap.hold (Move User locks a moving mailbox's user out of IMAP)


@dataclass(frozen=True)
class Field:
    """A field type: `kind` is one of str, int, float, bool, bytes, list, map, any."""

    kind: str
    of: "Field | None" = None  # element type of a list
    optional: bool = False

    def describe(self) -> str:
        base = f"list of {self.of.describe()}" if self.kind == "list" and self.of else self.kind
        return f"{base} or nil" if self.optional else base


STR = Field("str")
INT = Field("int")
FLOAT = Field("float")
BOOL = Field("bool")
BYTES = Field("bytes")
MAP = Field("map")
ANY = Field("any")


def ListOf(of: Field) -> Field:
    return Field("list", of)


def Opt(f: Field) -> Field:
    return Field(f.kind, f.of, optional=True)


# A recipient as the directory holds it (and as a cache or a transfer hint carries it).
RECIPIENT_FIELDS = {
    "alias": STR,
    "display_name": STR,
    "home_server": STR,
    "alternate": Opt(STR),
    "deliver_to_both": BOOL,
    "usn": INT,
}

# A message's priority (X.400's, as Exchange 5.5 kept it): it chooses the message's time-out.
PRIORITIES = ("urgent", "normal", "non-urgent")
# Why an IMS hands back a message it will not relay (mta.relay_failed's reason): the smarthost
# refused it for good (5xx), or its time-out passed before any took it.
RELAY_FAILURES = ("refused", "expired")

# The codes an `error` answer may carry, for the node that acts on the refusal: a code is what a
# program reads, the reason is what a person reads (and may be reworded at will).
NO_MAILBOX = "no_mailbox"  # the store has no such mailbox
NOT_LOCKED = "not_locked"  # the mailbox is not locked (by that owner)
# the request itself is at fault (an unknown name, a name taken, a value out of range): asked
# again it is refused again. `xcon` exits 2 on it, as on a bad flag; other refusals (busy, no
# room, starting) are the node's state, and asked later may succeed.
INVALID = "invalid"
ERROR_CODES = frozenset({NO_MAILBOX, NOT_LOCKED, INVALID})

# A move's state as the orchestrator shows it (orch.move_state's "move", and each of the status's
# "active"): what `xcon move` and the tools wait on. A move has ended once its step is one of
# MOVE_ENDED; "rolling_back" is true from its first failure until its rollback is done.
MOVE_STATE = {
    "move_id": STR, "alias": STR, "target": STR, "workaround": BOOL, "copy_delay_ms": INT, "source": Opt(STR),
    "step": STR, "started_at": FLOAT, "finished_at": Opt(FLOAT), "error": Opt(STR), "saved": Opt(MAP),
    "wait_usn": INT, "copied": INT, "rolling_back": BOOL, "waiting_for": Opt(STR), "attempts": INT,
    "held": BOOL,  # stopped in its step by a hold (the fault hold_at_step) until released
}
MOVE_ENDED = ("done", "failed")

MESSAGES: dict[str, dict[str, Field]] = {
    # --- any node ---
    "ping": {},
    "pong": {"node": STR, "ready": BOOL, "pid": INT},
    "status": {},
    "status_reply": {"node": STR, "status": MAP},
    "error": {"reason": STR, "code": Opt(STR)},  # code: one of ERROR_CODES, or nil
    "ok": {},
    # --- directory (ROUTER: lookups, snapshot, changes; PUB: change feed) ---
    "dir.add": {
        "alias": STR,
        "display_name": STR,
        "home_server": STR,
        "alternate": Opt(STR),
        "deliver_to_both": BOOL,
    },
    # `changes` may set home_server (str), alternate (str or nil), deliver_to_both (bool),
    # display_name (str), reject_from (list of aliases: delivery restrictions, Q178534). `op`
    # names the change for a sender that may send it again (the orchestrator: "<move id>.<step>"):
    # a repeated op is answered with the USN it got the first time, and applied once.
    "dir.modify": {"alias": STR, "changes": MAP, "op": Opt(STR)},
    "dir.changed": {"usn": INT, "recipient": MAP},
    "dir.lookup": {"alias": STR},
    "dir.entry": {"recipient": Opt(MAP), "usn": INT},
    "dir.snapshot": {},
    "dir.snapshot_reply": {"usn": INT, "recipients": ListOf(MAP)},
    # published on the feed (the Clone pattern: one update per USN, plus a heartbeat with the USN)
    "dir.change": {"usn": INT, "recipient": MAP},
    "dir.heartbeat": {"usn": INT},
    # --- store (one per server) ---
    # owner: nil for a new user's mailbox; a move's id when a legacy move (5.5 before SP4) makes
    # its target live first and marks it in transit later (KB Q277911)
    "store.create": {"mailbox": STR, "owner": Opt(STR)},
    "store.deliver": {
        "msg_id": STR,
        "mailbox": STR,
        "raw": BYTES,
        "ndr_for": Opt(STR),
        "ndr_rcpts": ListOf(STR),
        "expires_at": FLOAT,  # the message's time-out (epoch s): a store refuses it after that
    },
    # outcome: delivered | duplicate | deferred | not_here | expired | soft_deleted (the mailbox
    # was moved away and its source kept for recovery: KB 2579150)
    "store.result": {"msg_id": STR, "mailbox": STR, "outcome": STR, "reason": STR},
    "store.list": {"mailbox": STR},
    "store.listing": {"mailbox": STR, "messages": ListOf(MAP)},
    # A lock has an owner (a move's id), so a retried lock or unlock by its owner is harmless.
    # A move's last word to a store (unlock, delete or end_move) ends it there: the store then
    # refuses that owner's lock and import, however late they arrive (nodes/store/core.py).
    "store.lock": {"mailbox": STR, "owner": STR},
    "store.unlock": {"mailbox": STR, "owner": STR},
    "store.export": {"mailbox": STR, "after": STR, "limit": INT},
    # messages: [{"name": str, "msg_id": str, "raw": bytes, "folder": str ("" or a user's folder,
    # Maildir++'s ".Archive"), "info": str|nil (Maildir's flags, "2,S"; nil: unread, in new/)}];
    # next: the key to ask after, or nil when done. The whole mailbox travels, folders and flags
    # included (nodes/store/node.py export_page)
    "store.exported": {"mailbox": STR, "messages": ListOf(MAP), "next": Opt(STR)},
    # a move's copy: the first page creates the mailbox locked by `owner` (not deliverable until
    # that owner unlocks it, once the directory names this server)
    "store.import": {"mailbox": STR, "owner": STR, "messages": ListOf(MAP)},
    "store.imported": {"mailbox": STR, "count": INT},
    # delete the mailbox `owner` holds locked, and tell the MTA so it retries at once
    "store.delete": {"mailbox": STR, "owner": STR},
    "store.released": {"mailbox": STR},
    # the move `owner` is over here (rolled back or aborted): unlock what it holds, delete a
    # mailbox it created by import and never opened, refuse it from now on
    "store.end_move": {"mailbox": STR, "owner": STR},
    "store.move_ended": {"mailbox": STR, "owner": STR, "unlocked": BOOL, "deleted": INT},
    # --- mta (one per server) ---
    "mta.submit": {
        "msg_id": Opt(STR),  # the client's (protocol.names.valid_submitted_id); nil: the MTA makes one
        "sender": STR,
        "recipients": ListOf(STR),
        "subject": STR,
        "body": STR,
        "priority": Opt(STR),  # one of PRIORITIES; nil is normal
    },
    "mta.accepted": {"msg_id": STR, "rcpts": ListOf(STR)},
    # a message from outside the organisation, as the Internet Mail Service took it over SMTP
    # (nodes.ims): the client's bytes, an outside sender (an address) and the organisation's
    # recipients (aliases); msg_id is the IMS's, the same for the same message sent again
    "mta.submit_raw": {"msg_id": STR, "sender": STR, "recipients": ListOf(STR), "raw": BYTES, "priority": STR},
    # is `alias` in this MTA's directory cache (the IMS's RCPT check)? recipient: the entry, or nil
    "mta.lookup": {"alias": STR},
    "mta.entry": {"recipient": Opt(MAP)},
    # a peer MTA hands over responsibility for some (message, recipient) pairs
    "mta.transfer": {
        "msg_id": STR,
        "sender": STR,
        "raw": BYTES,
        "accepted_at": FLOAT,
        "ndr_for": Opt(STR),
        "ndr_rcpts": ListOf(STR),
        "priority": STR,
        # [{"alias": str, "alt_of": str|nil, "hint": recipient map|nil, "hops": int,
        #   "unconfirmed": bool (optional: an earlier delivery of the pair may have happened),
        #   "alt_copy": str|nil (optional: the alternate given a copy upstream, deliver to both),
        #   "cycles": int (optional: transfers in a row on no newer directory data; MAX_CYCLES is a loop)}]
        "rcpts": ListOf(MAP),
    },
    "mta.transfer_ack": {"msg_id": STR, "rcpts": ListOf(STR)},
    # what the MTA holds (xcon queue, like mailq): its first `limit` open pairs, oldest message first
    "mta.queue": {"limit": INT},
    # items: [{"msg_id", "kind" (message | ndr | postmaster), "sender", "rcpt", "alt_of", "state",
    #          "reason", "attempts", "next_retry_s" (float|nil: seconds from now), "handed_to",
    #          "age_s", "priority"}]; total: every open pair
    "mta.queue_listing": {"items": ListOf(MAP), "total": INT},
    # --- ims (an Internet Mail Service per server, with xcon up --smtp) ---
    # an MTA hands over a message for outside the organisation (`rcpt` is an address): a report
    # (ndr_for set) to an outside originator, as an RFC 3464 DSN, or mail to an outside address.
    # "ok" once it is durable in the IMS's queue; the IMS relays it to the smarthost
    "ims.outbound": {"msg_id": STR, "sender": STR, "rcpt": STR, "raw": BYTES, "ndr_for": Opt(STR),
                     "ndr_rcpts": ListOf(STR), "accepted_at": FLOAT, "priority": STR,
                     "expires_at": FLOAT},  # past its time-out the IMS hands it back (mta.relay_failed)
    # the IMS hands back what will not leave: reason one of RELAY_FAILURES, "refused" (the
    # smarthost said 5xx; its words in `diagnostic`) or "expired" (its time-out passed first). The MTA fails the pair as its own, an
    # NDR to the originator or, for a report, the postmaster's copy, and answers "ok" once that is
    # durable; taken once, however often it is sent
    "mta.relay_failed": {"msg_id": STR, "sender": STR, "rcpt": STR, "raw": BYTES, "ndr_for": Opt(STR),
                         "ndr_rcpts": ListOf(STR), "accepted_at": FLOAT, "priority": STR, "reason": STR,
                         "diagnostic": STR},
    # --- imap (an IMAP server per server, with xcon up --imap: nodes.imap) ---
    # Move User holds the user of a mailbox it moves: "ok" once no session of `user` is open and
    # no login is taken; it ends by itself when the store no longer locks the mailbox for `owner`
    "imap.hold": {"user": STR, "owner": STR},
    # --- faults, applied by a node's runtime to its own outgoing frames (see nodes/faults.py) ---
    "fault.link": {"peer": STR, "delay_ms": INT, "jitter_ms": INT, "drop": FLOAT, "duplicate": FLOAT,
                   "reorder": FLOAT, "seconds": FLOAT},
    "fault.feed_cut": {"seconds": FLOAT},
    "fault.clock": {"offset_ms": INT},
    "fault.lag": {"lag_ms": INT, "jitter_ms": INT},
    "fault.clear": {},
    # an IMS's SMTP sessions (nodes.ims): each reply `delay_ms` late; a session cut, with chance
    # `cut`, after its MTA took the message and before the 250 (the client does not know)
    "fault.smtp": {"cut": FLOAT, "delay_ms": INT, "seconds": FLOAT},
    # --- orchestrator ---
    # kind: delay | drop | duplicate | reorder (on the link node<->peer), pause, kill, restart,
    # feed_cut (an MTA off the directory feed), lag (an MTA's replication lag), clear,
    # kill_at_step (kill `node` when a move next enters params.step), corrupt (an MTA's queue log),
    # hold_at_step (hold the next move that enters params.step), release (every held move goes on)
    "orch.fault": {"kind": STR, "node": STR, "peer": Opt(STR), "params": MAP},
    "orch.move": {"alias": STR, "target": STR, "workaround": BOOL, "copy_delay_ms": INT},
    "orch.move_started": {"move_id": STR, "source": STR},
    "orch.move_status": {"move_id": STR},
    # roll back the running move of `alias`, if it has not reached set_home
    "orch.abort": {"alias": STR},
    "orch.move_state": {"move": MAP},
}

# Every message a node may receive that is an answer to one it sent.
REPLIES = frozenset(
    {
        "pong",
        "status_reply",
        "mta.queue_listing",
        "error",
        "ok",
        "dir.changed",
        "dir.entry",
        "dir.snapshot_reply",
        "store.result",
        "store.listing",
        "store.exported",
        "store.imported",
        "store.move_ended",
        "mta.accepted",
        "mta.entry",
        "mta.transfer_ack",
        "orch.move_started",
        "orch.move_state",
    }
)
