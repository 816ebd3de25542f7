"""What xcon serve's pages show, read by the tools the commands use: the cluster's status and
faults (Cluster, inspect.admin), each pair's outcome as `xcon check` judges it (inspect.check),
a message and its story (inspect.admin, inspect.trace), and the results store (lab.results).
Every function returns plain data: the pages render it, the JSON API returns it as it is."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from orchestrator import cluster as cl
from orchestrator.cluster.client import ClusterError
from orchestrator.inspect import admin
from orchestrator.inspect import check as checker
from orchestrator.inspect import trace as trace_mod
from orchestrator.lab import results as results_store

TRIALS_SHOWN = 200  # a campaign page lists its first trials; the plots and the JSON have them all


def cluster(run_dir: Path) -> dict[str, Any]:
    """The cluster now: nodes, each MTA's cache beside the directory's USN, queues, moves, faults."""
    snapshot: dict[str, Any] = {"running": False, "nodes": {}, "caches": [], "queues": {}, "moves": [], "faults": [],
                                "queue_items": 0, "settings": {}, "at": time.strftime("%H:%M:%S")}
    try:
        attached = cl.Cluster.attach(run_dir)
    except ClusterError as exc:
        snapshot["error"] = str(exc)
        return snapshot
    try:
        status = attached.status()
        if attached.config.network:
            from orchestrator import netns

            status["kernel_faults"] = netns.in_force(attached.config.network)
        nodes = status["nodes"]
        directory_usn = (nodes.get("directory", {}).get("status") or {}).get("usn")
        paused = set((nodes.get("orchestrator", {}).get("status") or {}).get("paused", ()))
        for name, n in nodes.items():
            s = n.get("status") or {}
            state = ("" if not n["alive"] else "paused (SIGSTOP)" if name in paused else n.get("error")
                     or ("ready" if s.get("ready", True) else "starting"))
            # an edge node's address is where the outside reaches it (SMTP, IMAP); on loopback, every
            # node's is its socket on this machine (the page left host and address empty there)
            endpoint = attached.config.nodes.get(name, {}).get("endpoints", {}).get("router", "")
            snapshot["nodes"][name] = {"alive": n["alive"], "pid": n.get("pid"),
                                       "host": n.get("host") or ("" if attached.config.network else "loopback"),
                                       "address": n.get("address") or s.get("smtp") or s.get("imap")
                                       or endpoint.removeprefix("tcp://"), "state": state}
            if name.startswith("mta.") and s:
                snapshot["caches"].append({"mta": name, "cache_usn": s.get("cache_usn"), "directory_usn": directory_usn,
                                           "behind": (directory_usn or 0) - (s.get("cache_usn") or 0),
                                           "lag_ms": s.get("lag_ms")})
        snapshot["moves"] = (nodes.get("orchestrator", {}).get("status") or {}).get("active", [])
        snapshot["faults"] = admin.faults_in_force(status)
        snapshot["queues"] = admin.queue(run_dir, attached, attached.mtas, limit=200)
        snapshot["queue_items"] = sum(q["total"] for q in snapshot["queues"].values())
        snapshot["settings"], snapshot["running"] = status["settings"], True
    finally:
        attached.close()
    snapshot["broken"] = broken_pairs(run_dir)
    return snapshot


_VERDICTS: dict[Path, tuple[float, list[dict[str, Any]]]] = {}
VERDICT_EVERY_S = 5.0  # a check reads every log: the live page asks for it at most this often


def broken_pairs(run_dir: Path) -> list[dict[str, Any]]:
    """The pairs `xcon check` finds broken now (lost, duplicated, an NDR it cannot justify), a
    line each (issue 33), judged again at most every VERDICT_EVERY_S; none while the logs cannot
    be judged. Not a pending pair: on a running cluster that is mail on its way (the queues show it)."""
    at, found = _VERDICTS.get(run_dir, (0.0, []))
    if time.monotonic() - at < VERDICT_EVERY_S:
        return found
    try:
        found = [{"msg_id": v.msg_id, "rcpt": v.rcpt, "outcome": v.outcome, "headline": v.headline()}
                 for v in checker.check_run(run_dir, audit=False).violations if v.outcome != "pending"]
    except (checker.NoVerdict, OSError):
        found = []
    _VERDICTS[run_dir] = (time.monotonic(), found)
    return found


def messages(run_dir: Path, outcome: str | None = None) -> dict[str, Any]:
    """Every (message, recipient) pair with its outcome as `xcon check` judges it, newest last."""
    every: dict[tuple[str, str], tuple[str, str]] = {}
    try:
        report = checker.check_run(run_dir, every=every)
        counts, error = report.counts, None
    except checker.NoVerdict as exc:
        counts, error = {}, str(exc)
    pairs = [{"msg_id": m, "rcpt": r, "sender": s, "outcome": o} for (m, r), (s, o) in every.items()
             if outcome is None or o == outcome]
    return {"pairs": pairs, "counts": counts, "outcome": outcome, "error": error}


def message(run_dir: Path, msg_id: str) -> dict[str, Any]:
    """A message: where it is, how it reads (an NDR as its report), its verdicts and its story."""
    places = admin.where(run_dir, msg_id)
    own = [p for p in places if p["msg_id"] == msg_id] or places
    reading = admin.reading(admin.raw_of(run_dir, own[0])) if own else None
    story = trace_mod.story(run_dir, msg_id) if (run_dir / "logs").is_dir() else []
    every: dict[tuple[str, str], tuple[str, str]] = {}
    found: dict[str, Any] = {}  # rcpt -> its broken verdict: the why, in words, and the events that decided it
    try:
        for v in checker.check_run(run_dir, every=every).violations:
            if v.msg_id == msg_id:
                found[v.rcpt] = {"headline": v.headline(), "events": v.decisive()}
    except checker.NoVerdict:
        pass
    return {"msg_id": msg_id, "places": [{k: v for k, v in p.items() if k != "raw"} for p in places],
            "message": reading,
            "verdicts": [{"rcpt": r, "outcome": o, **found.get(r, {})} for (m, r), (_, o) in every.items() if m == msg_id],
            "story": story, "lines": list(trace_mod.render_text(story)),
            "svg": trace_mod.svg(story, msg_id) if story else None}


def campaigns(run_dir: Path) -> list[dict[str, Any]]:
    """Every campaign and scenario run kept, newest first, a line each."""
    found = []
    for folder in results_store.runs(run_dir / "results"):
        try:
            s = results_store.read(folder)
        except (OSError, ValueError):
            continue
        counted = s.get("trials") or s.get("cases") or s.get("rows") or []
        broken = sum(1 for t in counted if t.get("broken") or t.get("matches") is False
                     or (s.get("kind") == "explore" and t.get("lost")))
        found.append({"folder": folder.name, "kind": s.get("kind", "?"), "what": _what_run(s),
                      "build": s.get("build", ""), "when": _started(folder.name) or s.get("when", ""),
                      "ended": s.get("when", ""), "count": len(counted), "broken": broken})
    return found


def _what_run(summary: dict[str, Any]) -> str:
    """A kept run's kind in words: a simulated campaign and one on real processes are not alike."""
    kind = summary.get("kind", "?")
    if kind == "chaos":
        return "campaign, simulated" if summary.get("simulated") else "campaign, real processes"
    if kind == "scenario":
        return "scenario, simulated" if any(c.get("simulated") for c in summary.get("cases") or []) else "scenario"
    return {"explore": "exploration, simulated"}.get(kind, kind)


def _started(folder: str) -> str | None:
    """When a kept run started, as its folder's name says (`20261206-033406-...`): the time a
    person finds it by. Its summary's `when` is when it ended."""
    m = re.match(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})-", folder)
    return "{}-{}-{} {}:{}:{}".format(*m.groups()) if m else None


def campaign(run_dir: Path, folder: str) -> tuple[dict[str, Any], Path] | None:
    """A kept run's summary and its folder; None if there is none of that name."""
    path = (run_dir / "results" / folder)
    if "/" in folder or folder.startswith(".") or not (path / "summary.json").is_file():
        return None
    return results_store.read(path), path
