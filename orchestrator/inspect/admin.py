"""The viewers a mail administrator expects: what each MTA holds (`xcon queue`, as Postfix's
mailq), one message wherever it is (`xcon show`, as postcat), and every fault in force (`xcon
fault list`, as toxiproxy-cli list).

A running MTA is asked (`mta.queue`): it knows when each pair is tried next. One that is down is
read from its queue log, which holds every open pair's state and reason (not its timers). A
message is found in the stores' Maildirs and the MTAs' queue logs, on a running cluster or a
stopped one: those files are the durable truth the nodes restart from.
"""

from __future__ import annotations

import email
import email.policy
import time
from pathlib import Path
from typing import Any

from nodes.config import ClusterConfig
from nodes.ims import outbound
from nodes.mail import summarize, text_of
from nodes.mta import wal
from nodes.mta.queue import listing
from nodes.store.actions import msg_id_of
from protocol.names import reports_of

DEFAULT_LIMIT = 1000


def queue(run_dir: Path, cluster: Any, mtas: list[str], limit: int = DEFAULT_LIMIT) -> dict[str, dict[str, Any]]:
    """Per MTA: {"items", "total", "source"}; source is "live" (the MTA answered) or "queue log"
    (it is down, or no cluster runs: `cluster` None; its durable state, with no retry times). An
    IMS (`ims.exN`) among `mtas` is read from its queue's files (nodes.ims.outbound): what it
    holds to relay or to hand back, and why."""
    found = {}
    for mta in mtas:
        if mta.startswith("ims."):
            found[mta] = ims_queue(run_dir, mta, limit)
            continue
        try:
            if cluster is None or not cluster.alive(mta):
                raise LookupError
            body = cluster.client.request(mta, "mta.queue", {"limit": limit}, timeout=5.0).body
            found[mta] = {"items": body.items, "total": body.total, "source": "live"}
        except Exception:  # noqa: BLE001 - down, paused or not answering: read its durable state
            found[mta] = {**offline_queue(run_dir, mta, limit), "source": "queue log"}
    return found


def offline_queue(run_dir: Path, mta: str, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """An MTA's open pairs as its queue log holds them (no retry times: a restart starts those again)."""
    path = run_dir / "mta" / mta.split(".", 1)[1] / "queue.wal"
    try:
        recovered = wal.recover(path.read_bytes())[0]
    except FileNotFoundError:
        return {"items": [], "total": 0}
    messages = {m.msg_id: m for m in recovered.queued}
    try:
        lifetimes = ClusterConfig.load(run_dir).node_settings(mta).lifetimes
    except (OSError, ValueError):  # no cluster.json to say: whether a message expired is not known
        lifetimes = None
    items, total = listing(messages, time.time(), limit, lifetimes)
    for item in items:
        item["next_retry_s"] = None
    return {"items": items, "total": total, **({"damaged": True} if recovered.damage else {})}


def ims_queue(run_dir: Path, ims: str, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """What an IMS holds, as its files say: each item to relay ("relaying") or to hand back to its
    MTA ("returning", with why it will not leave), oldest first."""
    found = outbound.look(run_dir / "ims" / ims.split(".", 1)[1])
    ended = found.ended()
    held = sorted((r for key, r in found.items.items() if key not in ended), key=lambda r: r["queued_at"])
    now = time.time()
    items = [{"msg_id": r["msg_id"], "kind": "ndr" if r["ndr_for"] else "message", "sender": r["sender"],
              "rcpt": r["rcpt"], "alt_of": None, "state": "returning" if r["failed"] else "relaying",
              "reason": r["failed"] or "", "attempts": None, "next_retry_s": None, "handed_to": None,
              "age_s": round(now - r["queued_at"], 3), "priority": r.get("priority") or "normal"}
             for r in held[:limit]]
    return {"items": items, "total": len(held), "source": "queue files",
            **({"damaged": True} if found.damaged_files or found.log_scan.damaged else {})}


def where(run_dir: Path, msg_id: str) -> list[dict[str, Any]]:
    """Every place `msg_id` is, and its reports: each Maildir file (server, mailbox, path) and
    each queue log that holds it (server, open recipients)."""
    places: list[dict[str, Any]] = []
    for server_dir in sorted(p for p in (run_dir / "stores").glob("*") if p.is_dir()):
        for box in sorted(p for p in server_dir.iterdir() if p.is_dir()):
            for sub in ("new", "cur"):
                for f in sorted((box / sub).glob("*")) if (box / sub).is_dir() else ():
                    found = msg_id_of(f.name.split(":", 1)[0])
                    if found and (found == msg_id or reports_of(msg_id, found)):
                        places.append({"msg_id": found, "where": "mailbox", "server": server_dir.name,
                                       "mailbox": box.name, "path": str(f.relative_to(run_dir))})
    for log in sorted((run_dir / "mta").glob("*/queue.wal")):
        try:
            recovered = wal.recover(log.read_bytes())[0]
        except OSError:
            continue
        for m in recovered.queued:
            if m.msg_id == msg_id or reports_of(msg_id, m.msg_id):
                places.append({"msg_id": m.msg_id, "where": "queue", "server": log.parent.name,
                               "open": [p.rcpt for p in m.pairs.values() if not p.final],
                               "path": str(log.relative_to(run_dir)), "raw": m.raw})
    return places


def raw_of(run_dir: Path, place: dict[str, Any]) -> bytes:
    return place["raw"] if "raw" in place else (run_dir / place["path"]).read_bytes()


def reading(raw: bytes) -> dict[str, Any]:
    """A message as a person reads it: its headers, its text, and, for an NDR, the report's
    fields per recipient (RFC 3464: Final-Recipient, Action, Status, Diagnostic-Code)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    text, report = [], []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            for block in part.get_payload():
                report.append({k: " ".join(text_of(v).split()) for k, v in block.items()})
        elif kind == "text/plain" and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            text.append(payload.decode(part.get_content_charset() or "utf-8", errors="replace"))
        elif kind in ("message/rfc822-headers", "text/rfc822-headers"):
            payload = part.get_payload(decode=True)
            if payload:
                text.append("--- the original's headers ---\n" + payload.decode("utf-8", errors="replace"))
    return {"headers": [[k, " ".join(text_of(v).split())] for k, v in msg.items()], "text": "\n".join(text),
            "report": report[1:] if report and "Reporting-MTA" in report[0] else report,
            "reporting": report[0] if report and "Reporting-MTA" in report[0] else None, **summarize(raw)}


def faults_in_force(status: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    """Every fault in force, from `Cluster.status()` (and the kernel's, read from it where the
    cluster runs on namespaces): a row each with where, kind, what and when it ends."""
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []

    def ends(at: float | None) -> str:
        return "until cleared" if at is None else f"in {max(0.0, at - now):.1f}s"

    for name, node in status["nodes"].items():
        s = node.get("status") or {}
        if not node.get("alive"):
            continue
        for peer, rule in (s.get("faults", {}).get("links") or {}).items():
            what = ", ".join(f"{k}={v}" for k, v in rule.items() if k != "until")
            rows.append({"where": f"{name} -> {peer}", "kind": "link", "what": what, "ends": ends(rule["until"])})
        if "feed_cut_until" in s.get("faults", {}):
            rows.append({"where": name, "kind": "feed_cut", "what": "off the directory's feed",
                         "ends": ends(s["faults"]["feed_cut_until"])})
        if "smtp" in s.get("faults", {}):
            f = s["faults"]["smtp"]
            rows.append({"where": name, "kind": "smtp", "what": f"sessions cut before their 250 with chance {f['cut']:g}, "
                         f"replies {f['delay_ms']} ms late", "ends": ends(f["until"])})
        if "clock_offset_ms" in s.get("faults", {}):
            rows.append({"where": name, "kind": "clock", "what": f"reads {s['faults']['clock_offset_ms']:+d} ms off",
                         "ends": ends(None)})
        if "lag_fault" in s:
            lag = s["lag_fault"]
            rows.append({"where": name, "kind": "lag", "what": f"replication lag {lag['lag_ms']} ms (+{lag['jitter_ms']} "
                         f"jitter), configured {lag['configured_ms']} ms", "ends": ends(None)})
        for paused, at in (s.get("resume_at") or {}).items():
            rows.append({"where": paused, "kind": "pause", "what": "SIGSTOP", "ends": ends(at)})
        for arm in s.get("armed") or []:
            rows.append({"where": arm["node"], "kind": "kill_at_step", "what": f"killed when a move enters "
                         f"{arm['step']}, restarted {arm['restart_after']:g}s later", "ends": "when it fires"})
        for step in s.get("holds") or []:
            rows.append({"where": "orchestrator", "kind": "hold_at_step", "what": f"the next move to enter {step} "
                         "waits there", "ends": "xcon fault release"})
        for move in s.get("active") or []:
            if move.get("held"):
                rows.append({"where": "orchestrator", "kind": "held", "what": f"move of {move.get('alias')} held in "
                             f"{move.get('step')}", "ends": "xcon fault release"})
    for rule in status.get("kernel_faults") or []:
        rows.append({**rule, "ends": "xcon fault heal"})
    return rows
