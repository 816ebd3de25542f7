"""One message's story across every node: `xcon trace`, its SVG, and the Perfetto export.

The story is the message's own events (and its NDR's), plus what shaped them: directory
changes and cache applications for the aliases it touches, the moves of those mailboxes, and
every injected fault, in the order of their hybrid logical clocks (protocol.hlc): a receive after
its send, and by time between events with no chain of frames between them. Times are the clocks'
physical parts, in ms since the message's first event.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any, Iterable

from protocol import hlc
from protocol.names import reports_of

from . import logread

CONTEXT_BEFORE_S = 3.0
HIDE = {"ts", "node", "level", "event", "hlc", "lamport", "msg_id"}


def story(run_dir: Path, msg_id: str) -> list[dict[str, Any]]:
    """The message's events and their context, in clock order (the merged logs' own order)."""
    events = list(logread.merged(run_dir))
    own = [e for e in events if _is_own(e, msg_id)]
    if not own:
        return []
    aliases: set[str] = set()
    for e in own:
        aliases.update(e.get("rcpts") or [])
        aliases.update(v for v in (e.get("rcpt"), e.get("mailbox"), e.get("sender"), e.get("to")) if isinstance(v, str))
        aliases.update((e.get("alt_of") or {}).values())
    first, last = ms(own[0]), ms(own[-1])
    start, end = first - CONTEXT_BEFORE_S * 1000, last + 500
    return [e for e in events if _is_own(e, msg_id) or (
        start <= ms(e) <= end and _shapes(e, aliases)
        and not (e["event"] == "mta.cache_applied" and ms(e) < first))]  # old news before the message


def ms(e: dict[str, Any]) -> int:
    """An event's time: its clock's physical part, in ms."""
    return hlc.of_event(e)[0]


def _is_own(e: dict[str, Any], msg_id: str) -> bool:
    mid = e.get("msg_id") or ""
    return mid == msg_id or reports_of(msg_id, mid) or e.get("ndr_for") == msg_id


def _shapes(e: dict[str, Any], aliases: set[str]) -> bool:
    name = e["event"]
    if name.startswith("fault.") and name != "fault.applied":
        return True
    if name in ("directory.modified", "mta.cache_applied"):
        return e.get("alias") in aliases
    if name in ("move.step", "move.failed", "store.locked", "store.released", "mta.released"):
        return (e.get("mailbox") or e.get("alias")) in aliases
    return False


def hop(e: dict[str, Any]) -> str | None:
    """The node a frame came from, for the events that record a frame's arrival."""
    name, node = e["event"], e.get("node", "")
    server = node.split(".", 1)[1] if "." in node else ""
    if name == "mta.transfer_in":
        return e.get("src")
    if name.startswith("store.") and name in ("store.delivered", "store.deferred", "store.not_here",
                                              "store.duplicate_suppressed"):
        return f"mta.{server}"
    if name in ("mta.delivered", "mta.released") or (name == "mta.deferred" and "locked" in str(e.get("reason"))):
        return f"store.{server}"
    if name == "mta.transferred":
        return e.get("to")
    if name == "mta.rerouted" and e.get("reason") == "directory lookup":
        return "directory"
    if name == "mta.cache_applied":
        return "directory"
    return None


def facts(e: dict[str, Any]) -> str:
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in e.items() if k not in HIDE)


def render_text(events: list[dict[str, Any]]) -> Iterable[str]:
    """A line per event: ms since the first, the frame's hop if any, the node, the event, its facts."""
    zero = ms(events[0]) if events else 0
    for e in events:
        src = hop(e)
        arrow = f"{src} -> " if src else ""
        yield f"{'+' + str(ms(e) - zero):>8} {arrow + e.get('node', '?'):<23} {e['event']:<22} {facts(e)}"


def tone(e: dict[str, Any]) -> str:
    name = e["event"]
    if name == "mta.failed" and e.get("report") == "none":
        return "#c00000"
    if name.startswith("fault.") or name in ("mta.failed", "mta.not_homed", "store.not_here"):
        return "#d0422b"
    if name in ("store.delivered", "mta.delivered", "mta.transferred"):
        return "#1e8c3a"
    if "deferred" in name or name in ("store.locked",):
        return "#c77700"
    if name.startswith(("directory.", "mta.cache", "mta.change")):
        return "#2456a6"
    return "#444444"


def label(e: dict[str, Any]) -> str:
    name = e["event"]
    if name == "mta.failed" and e.get("report") == "none":
        return f"DROPPED SILENTLY: {e.get('rcpt')} ({e.get('why', '')})"
    keep = ("rcpt", "mailbox", "reason", "home_server", "cache_usn", "directory_usn", "usn", "step", "kind",
            "target", "peer", "report", "rcpts", "alias")
    return f"{name}  " + " ".join(f"{k}={e[k] if isinstance(e[k], str) else json.dumps(e[k])}" for k in keep if k in e)


def lanes_of(events: list[dict[str, Any]]) -> list[str]:
    seen = {e.get("node", "?") for e in events} | {h for e in events if (h := hop(e))}
    order = ["cli", "orchestrator", "directory"]
    servers = sorted({n.split(".", 1)[1] for n in seen if n.startswith(("mta.", "store."))})
    for s in servers:
        order += [f"mta.{s}", f"store.{s}"]
    return [n for n in order if n in seen] + sorted(seen - set(order))


def svg(events: list[dict[str, Any]], msg_id: str) -> str:
    """A sequence diagram: a lane per node, a row per event in causal order, an arrow per hop."""
    lanes = lanes_of(events)
    zero = ms(events[0]) if events else 0
    lane_w, row_h, top, left = 120, 22, 70, 76  # left of the lanes: the time column
    x = {n: left + lane_w // 2 + i * lane_w for i, n in enumerate(lanes)}
    text_x = left + lane_w * len(lanes) + 10
    width = text_x + 760
    height = top + row_h * (len(events) + 1) + 40
    # drawn to its size, shown no wider than its window or page (issue 33: a 1,566 px trace
    # widened the message's page); the viewBox keeps its proportions as it shrinks
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'style="max-width: 100%; height: auto" font-family="DejaVu Sans Mono, monospace" font-size="11">',
           '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="20" y="22" font-size="15" font-weight="bold">xcon trace {escape(msg_id)}</text>',
           '<text x="20" y="40" fill="#666">rows in causal order (hybrid logical clocks), ms since the first; arrows '
           'are frames between nodes; blue: directory and cache; orange: deferral; red: faults and failures</text>',
           f'<text x="{left - 10}" y="{top - 8}" text-anchor="end" font-weight="bold">ms</text>']
    for n in lanes:
        out.append(f'<text x="{x[n]}" y="{top - 8}" text-anchor="middle" font-weight="bold">{escape(n)}</text>')
        out.append(f'<line x1="{x[n]}" y1="{top}" x2="{x[n]}" y2="{height - 30}" stroke="#bbb" stroke-dasharray="4 3"/>')
    for i, e in enumerate(events):
        y = top + row_h * (i + 1)
        node, color = e.get("node", "?"), tone(e)
        if i % 2 == 0:
            out.append(f'<rect x="0" y="{y - row_h // 2 - 2}" width="{width}" height="{row_h}" fill="#f6f6f6"/>')
        src = hop(e)
        if src in x and src != node:
            out.append(f'<line x1="{x[src]}" y1="{y - row_h + 6}" x2="{x[node]}" y2="{y}" stroke="{color}" '
                       f'stroke-width="1.6" marker-end="url(#a)"/>')
        shape = (f'<rect x="{x[node] - 6}" y="{y - 6}" width="12" height="12" fill="{color}"/>'
                 if e["event"].startswith("fault.") else f'<circle cx="{x[node]}" cy="{y}" r="5" fill="{color}"/>')
        out.append(shape)
        weight = ' font-weight="bold"' if color == "#c00000" else ""
        out.append(f'<text x="{left - 10}" y="{y + 4}" text-anchor="end" fill="#666">+{ms(e) - zero}</text>')
        out.append(f'<text x="{text_x}" y="{y + 4}" fill="{color}"{weight}>'
                   f'{escape(node)}: {escape(label(e))[:140]}</text>')
    out.append("</svg>")
    return "\n".join(out)


def perfetto(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Chrome trace-event JSON (opens in the Perfetto UI): an instant per log event, a thread per
    node, and a slice per move from its start to its end."""
    tids: dict[str, int] = {}
    trace: list[dict[str, Any]] = []
    moves: dict[str, dict[str, Any]] = {}
    for e in events:
        node = e.get("node", "?")
        if node not in tids:
            tids[node] = len(tids) + 1
            trace.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tids[node], "args": {"name": node}})
        # Perfetto orders by ts (us): the clock's ms, its counter as the us within (a counter
        # past 999 in one ms is rare, and only blurs the order inside that ms)
        at = hlc.of_event(e)
        ts = at[0] * 1000 + min(at[1], 999)
        args = {k: v for k, v in e.items() if k not in ("node", "event")}
        trace.append({"name": e["event"], "cat": node.split(".")[0], "ph": "i", "s": "t", "ts": ts, "pid": 1,
                      "tid": tids[node], "args": args})
        if e["event"] == "move.started":
            moves[e.get("move_id", "")] = {"ts": ts, "alias": e.get("alias"), "tid": tids[node]}
        elif e["event"] in ("move.done", "move.failed") and e.get("move_id") in moves:
            m = moves.pop(e["move_id"])
            trace.append({"name": f"move {m['alias']}", "cat": "move", "ph": "X", "ts": m["ts"], "dur": ts - m["ts"],
                          "pid": 1, "tid": m["tid"], "args": {"move_id": e["move_id"], "outcome": e["event"]}})
    return {"traceEvents": trace, "displayTimeUnit": "ms"}
