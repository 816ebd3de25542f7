"""Every wire message of xcon, declared once (the Maelstrom habit: one page is the protocol).

A message type is a name and its body, a msgspec `Struct` whose fields are typed. A frame's body
is decoded straight into its type and validated as it is read (in C: protocol.frame), nested
shapes included, so a core gets a value whose every field has its declared type and never checks
a shape again. `X | None` admits nil. Every field is on the wire, nil or not, but for the few with
a default (added to a nested shape later: a node that predates them leaves them out). Nodes
import these names; nothing else invents a message shape. Bump VERSION when a field changes
meaning or a required field is added.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, NotRequired, TypedDict

from msgspec import Meta, Struct, defstruct

from .hlc import MAX_OFFSET_S

VERSION = 11  # 2: owners on import and delete, store.end_move, idempotent dir.modify, orch.abort; 3: error codes;
# 4: priority on mta.submit and mta.transfer; a delivery's time-out (store.deliver expires_at);
# 5: store.create's owner (a legacy move's live target), the outcome soft_deleted;
# 6: a transfer's rcpt counts routing cycles (not hops) for loops; ids an MTA derives carry `~`
# marks a client's cannot (protocol.names); the postmaster mailbox; a move's state says held;
# 7: a frame's clock is a hybrid logical clock (protocol.hlc), below 2**62; fault.clock; mta.queue;
# 8: mail from and to outside the organisation: mta.submit_raw, mta.lookup, ims.outbound
# 9: ims.outbound carries the message's acceptance, priority and time-out; mta.relay_failed;
# imap.hold (Move User locks a moving mailbox's user out of IMAP); 10: ims.rcpt, ims.data, ims.said (the
# IMS's SMTP door asks its core); 11: imap.sync, imap.synced (`xcon wait` waits for IMAP's users)


class Body(Struct, forbid_unknown_fields=True, gc=False):
    """A message's body: a frame's, by its type (MESSAGES). Not tracked by the cyclic garbage
    collector: a body holds no cycle, and a simulated trial makes a few hundred of them."""


MESSAGES: dict[str, type[Body]] = {}  # every message type, by name


def message(type_: str, **fields: Any) -> type[Body]:
    """Declare the message `type_`: its body's fields in order, each a type or (type, default)."""
    spec = [(name, *f) if isinstance(f, tuple) else (name, f) for name, f in fields.items()]
    cls = defstruct("".join(w.title() for w in type_.replace(".", "_").split("_")), spec, bases=(Body,),
                    module=__name__)
    MESSAGES[type_] = cls
    return cls


def Opt(t: Any) -> Any:
    """`t` or nil."""
    return t | None


class Recipient(TypedDict):
    """A recipient as the directory holds it (and as a cache or a transfer hint carries it): a
    dict, checked as it is decoded, since the directory's file and an MTA's cache keep it as one.
    `reject_from` is there when the directory has delivery restrictions for it (Q178534)."""

    alias: str
    display_name: str
    home_server: str
    alternate: str | None
    deliver_to_both: bool
    usn: int
    reject_from: NotRequired[list[str]]


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
class MoveState(TypedDict):
    move_id: str
    alias: str
    target: str
    workaround: bool
    copy_delay_ms: int
    source: str | None
    step: str
    started_at: float
    finished_at: float | None
    error: str | None
    saved: dict[str, Any] | None
    wait_usn: int
    copied: int
    rolling_back: bool
    waiting_for: str | None
    attempts: int
    held: bool  # stopped in its step by a hold (the fault hold_at_step) until released


MOVE_STATE = tuple(MoveState.__annotations__)
MOVE_ENDED = ("done", "failed")

Count = Annotated[int, Meta(ge=0)]

# --- any node ---

Ping = message("ping", )

Pong = message("pong", node=str, ready=bool, pid=int)

Status = message("status", )

StatusReply = message("status_reply", node=str, status=dict[str, Any])

# code: one of ERROR_CODES, or nil
Error = message("error", reason=str, code=Opt(str))

Ok = message("ok", )

# --- directory (ROUTER: lookups, snapshot, changes; PUB: change feed) ---

DirAdd = message("dir.add", alias=str, display_name=str, home_server=str, alternate=Opt(str),
                  deliver_to_both=bool)

# `changes` may set home_server (str), alternate (str or nil), deliver_to_both (bool), display_name
# (str), reject_from (list of aliases: delivery restrictions, Q178534). `op` names the change for a
# sender that may send it again (the orchestrator: "<move id>.<step>"): a repeated op is answered
# with the USN it got the first time, and applied once.
DirModify = message("dir.modify", alias=str, changes=dict[str, Any], op=Opt(str))

DirChanged = message("dir.changed", usn=int, recipient=Recipient)

DirLookup = message("dir.lookup", alias=str)

DirEntry = message("dir.entry", recipient=Opt(Recipient), usn=int)

DirSnapshot = message("dir.snapshot", )

DirSnapshotReply = message("dir.snapshot_reply", usn=int, recipients=list[Recipient])

# On the feed (the Clone pattern: one update per USN, plus a heartbeat with the USN).
DirChange = message("dir.change", usn=int, recipient=Recipient)

DirHeartbeat = message("dir.heartbeat", usn=int)

# --- store (one per server) ---

# owner: nil for a new user's mailbox; a move's id when a legacy move (5.5 before SP4) makes its
# target live first and marks it in transit later (KB Q277911).
StoreCreate = message("store.create", mailbox=str, owner=Opt(str))

# expires_at: the message's time-out (epoch s): a store refuses it after that
StoreDeliver = message("store.deliver", msg_id=str, mailbox=str, raw=bytes, ndr_for=Opt(str),
                        ndr_rcpts=list[str], expires_at=float)



class Outcome(StrEnum):
    """A store's answer to store.deliver; a frame with any other is refused as it is read."""

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # delivered before: the store holds it once
    DEFERRED = "deferred"  # the mailbox is locked (a move)
    NOT_HERE = "not_here"
    EXPIRED = "expired"  # past the message's time-out, and not held: refused
    SOFT_DELETED = "soft_deleted"  # moved away, its source kept for recovery (KB 2579150)


StoreResult = message("store.result", msg_id=str, mailbox=str, outcome=Outcome, reason=str)

StoreList = message("store.list", mailbox=str)

StoreListing = message("store.listing", mailbox=str, messages=list[dict[str, Any]])

# A lock has an owner (a move's id), so a retried lock or unlock by its owner is harmless. A move's
# last word to a store (unlock, delete or end_move) ends it there: the store then refuses that
# owner's lock and import, however late they arrive (nodes/store/core.py).
StoreLock = message("store.lock", mailbox=str, owner=str)

StoreUnlock = message("store.unlock", mailbox=str, owner=str)

StoreExport = message("store.export", mailbox=str, after=str, limit=int)




class Carried(Body):
    """A message of a mailbox a move copies: its file's name, its folder ("" or a user's folder,
    Maildir++'s ".Archive") and its flags (Maildir's info, "2,S"; nil: unread, in new/), where it
    has them."""

    name: str
    raw: bytes
    msg_id: str = ""  # what the source read in its name: the target reads the name again
    folder: str = ""
    info: str | None = None


# A page of a move's copy: the whole mailbox travels, folders and flags included
# (nodes/store/node.py export_page); next: the key to ask after, or nil when done.
StoreExported = message("store.exported", mailbox=str, messages=list[Carried], next=Opt(str))

# A move's copy: the first page creates the mailbox locked by `owner` (not deliverable until that
# owner unlocks it, once the directory names this server).
StoreImport = message("store.import", mailbox=str, owner=str, messages=list[Carried])

StoreImported = message("store.imported", mailbox=str, count=int)

# Delete the mailbox `owner` holds locked, and tell the MTA so it retries at once.
StoreDelete = message("store.delete", mailbox=str, owner=str)

StoreReleased = message("store.released", mailbox=str)

# The move `owner` is over here (rolled back or aborted): unlock what it holds, delete a mailbox it
# created by import and never opened, refuse it from now on.
StoreEndMove = message("store.end_move", mailbox=str, owner=str)

StoreMoveEnded = message("store.move_ended", mailbox=str, owner=str, unlocked=bool, deleted=int)

# --- mta (one per server) ---

# msg_id: the client's (protocol.names.valid_submitted_id); nil: the MTA makes one; priority: one of
# PRIORITIES; nil is normal
MtaSubmit = message("mta.submit", msg_id=Opt(str), sender=str, recipients=list[str], subject=str, body=str,
                     priority=Opt(str))

MtaAccepted = message("mta.accepted", msg_id=str, rcpts=list[str])

# A message from outside the organisation, as the Internet Mail Service took it over SMTP
# (nodes.ims): the client's bytes, an outside sender (an address) and the organisation's recipients
# (aliases); msg_id is the IMS's, the same for the same message sent again.
MtaSubmitRaw = message("mta.submit_raw", msg_id=str, sender=str, recipients=list[str], raw=bytes,
                        priority=str)

# Is `alias` in this MTA's directory cache (the IMS's RCPT check)?
MtaLookup = message("mta.lookup", alias=str)

MtaEntry = message("mta.entry", recipient=Opt(Recipient))




class TransferRcpt(Body):
    """A pair handed over: its recipient, the primary it is the alternate of, the sender's
    directory entry (a hint, newer than the receiver's cache perhaps) and the hops so far."""

    alias: str
    alt_of: str | None
    hint: Recipient | None
    hops: Count  # a negative count would be taken for a retransmission: acknowledged and dropped
    unconfirmed: bool = False  # an earlier delivery of the pair may have happened
    alt_copy: str | None = None  # the alternate given a copy upstream (deliver to both)
    cycles: Count = 0  # transfers in a row on no newer directory data; MAX_CYCLES is a loop


# A peer MTA hands over responsibility for some (message, recipient) pairs.
MtaTransfer = message("mta.transfer", msg_id=str, sender=str, raw=bytes, accepted_at=float, ndr_for=Opt(str),
                       ndr_rcpts=list[str], priority=str, rcpts=list[TransferRcpt])

MtaTransferAck = message("mta.transfer_ack", msg_id=str, rcpts=list[str])

# What the MTA holds (xcon queue, like mailq): its first `limit` open pairs, oldest first.
MtaQueue = message("mta.queue", limit=int)

# items: [{"msg_id", "kind" (message | ndr | postmaster), "sender", "rcpt", "alt_of", "state",
# "reason", "attempts", "next_retry_s" (float|nil: seconds from now), "handed_to", "age_s",
# "priority", "expired" (its message's time-out has passed)}]; total: every open pair.
MtaQueueListing = message("mta.queue_listing", items=list[dict[str, Any]], total=int)

# --- ims (an Internet Mail Service per server, with xcon up --smtp) ---

# An MTA hands over a message for outside the organisation (`rcpt` is an address): a report (ndr_for
# set) to an outside originator, as an RFC 3464 DSN, or mail to an outside address. "ok" once it is
# durable in the IMS's queue; the IMS relays it to the smarthost, and past its time-out (expires_at)
# hands it back (mta.relay_failed).
ImsOutbound = message("ims.outbound", msg_id=str, sender=str, rcpt=str, raw=bytes, ndr_for=Opt(str),
                       ndr_rcpts=list[str], accepted_at=float, priority=str, expires_at=float)

# An SMTP session's transaction, as the IMS's door (aiosmtpd, or a simulated client) asks its core
# (nodes.ims.core): a RCPT's address; DATA's reverse-path ("" or "<>" for the null one), the
# recipients RCPT took, the client's bytes, EHLO's name and the client's address, and RFC 3461's
# parameters (the transaction's; each recipient's by alias). Answered ims.said: the SMTP reply's
# code and text; `cut` when a fault.smtp cut the session before its 250; `msg_id` with a 250 to DATA.
ImsRcpt = message("ims.rcpt", address=str, peer=str)
ImsData = message("ims.data", mail_from=str, rcpts=list[str], raw=bytes, helo=str, peer=str, peer_ip=str,
                   dsn_mail=list[str], dsn_rcpt=dict[str, list[str]])
ImsSaid = message("ims.said", code=int, text=str, cut=(bool, False), msg_id=(Opt(str), None))

# The IMS hands back what will not leave: reason one of RELAY_FAILURES, "refused" (the smarthost
# said 5xx; its words in `diagnostic`) or "expired" (its time-out passed first). The MTA fails the
# pair as its own, an NDR to the originator or, for a report, the postmaster's copy, and answers
# "ok" once that is durable; taken once, however often it is sent.
MtaRelayFailed = message("mta.relay_failed", msg_id=str, sender=str, rcpt=str, raw=bytes, ndr_for=Opt(str),
                          ndr_rcpts=list[str], accepted_at=float, priority=str, reason=str, diagnostic=str)

# --- imap (an IMAP server per server, with xcon up --imap: nodes.imap) ---

# Move User holds the user of a mailbox it moves: "ok" once no session of `user` is open and no
# login is taken; it ends by itself when the store no longer locks the mailbox for `owner`.
ImapHold = message("imap.hold", user=str, owner=str)

# `xcon wait` asks each IMAP server to bring its users in step with the directory and the store's
# locks now (they follow both every half second): answered once Dovecot has read them, so that a
# user just moved logs in on the new server at once.
ImapSync = message("imap.sync")
ImapSynced = message("imap.synced", usn=int, users=list[str])

# --- faults, applied by a node's runtime to its own outgoing frames (see nodes/faults.py) ---

FaultLink = message("fault.link", peer=str, delay_ms=int, jitter_ms=int, drop=float, duplicate=float,
                     reorder=float, seconds=float)

FaultFeedCut = message("fault.feed_cut", seconds=float)

# how far off the node's clock reads from now on, bounded for every node alike (the host's and an
# edge node's runtime once checked it apart, and only one of them did)
FaultClock = message("fault.clock", offset_ms=Annotated[int, Meta(ge=-int(MAX_OFFSET_S * 1000),
                                                                  le=int(MAX_OFFSET_S * 1000))])

FaultLag = message("fault.lag", lag_ms=int, jitter_ms=int)

FaultClear = message("fault.clear")

# An IMS's SMTP sessions (nodes.ims): each reply `delay_ms` late; a session cut, with chance `cut`,
# after its MTA took the message and before the 250 (the client does not know).
FaultSmtp = message("fault.smtp", cut=float, delay_ms=int, seconds=float)

# --- orchestrator ---

# kind: delay | drop | duplicate | reorder (on the link node<->peer), pause, kill, restart, feed_cut
# (an MTA off the directory feed), lag (an MTA's replication lag), clear, kill_at_step (kill `node`
# when a move next enters params.step), corrupt (an MTA's queue log), hold_at_step (hold the next
# move that enters params.step), release (every held move goes on).
OrchFault = message("orch.fault", kind=str, node=str, peer=Opt(str), params=dict[str, Any])

OrchMove = message("orch.move", alias=str, target=str, workaround=bool, copy_delay_ms=int)

OrchMoveStarted = message("orch.move_started", move_id=str, source=str)

OrchMoveStatus = message("orch.move_status", move_id=str)

# Roll back the running move of `alias`, if it has not reached set_home.
OrchAbort = message("orch.abort", alias=str)

OrchMoveState = message("orch.move_state", move=MoveState)


OK = Ok()  # the one "ok" body: it has no fields, so one value serves every answer

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
        "imap.synced",
    }
)
