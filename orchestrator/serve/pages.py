"""xcon serve's pages: Jinja2 templates (templates/) rendered on the server, and the campaign's
plots as SVG (pygal). `static_campaign` renders a kept campaign's page to a file, the same page
the server shows, for `index.html` in the results store and `xcon chaos --report`."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from orchestrator.lab.findings import by_cause, what_broke

from .data import TRIALS_SHOWN

ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=jinja2.select_autoescape(("html",)), trim_blocks=True, lstrip_blocks=True)


def render(template: str, root: str = "", **context: Any) -> str:
    return ENV.get_template(template).render(root=root, figure_words=figure_words, **context)


# a campaign's totals as a person reads them, where the key alone does not say it (issue 33: a raw
# `stale_locks` was a heading); any other key reads with its underscores as spaces
FIGURE_WORDS = {"ndr": "NDRs", "stale_locks": "locks left by no move", "moves_failed": "moves that failed",
                "broken_trials": "broken trials", "stuck_trials": "trials that never settled",
                "torn_writes": "kills inside a write", "unjustified_ndr": "NDRs the facts do not justify",
                "early_postmaster": "copies to the postmaster too early", "both": "delivered and NDR'd",
                "declined": "failed, no report asked for", "damaged": "lost to damaged files",
                "seconds": "seconds in trials", "wall_seconds": "seconds", "trials_per_minute": "trials a minute"}


def figure_words(key: str) -> str:
    return FIGURE_WORDS.get(key, key.replace("_", " "))


def campaign_page(summary: dict[str, Any], root: str = "", trace_base: str = "", **context: Any) -> str:
    """A campaign's (or scenario run's) page; trace links are `trace_base` + the picture's file."""
    trials = summary.get("trials") or []
    broken = []
    for t in trials:
        if t.get("broken"):
            href, cmd = _trace_links(t, trace_base, bool(context.get("static")))
            broken.append({"seed": t["seed"], "run_dir": t.get("run_dir"), "trace": t.get("trace"),
                           "what": what_broke(t.get("violations"), t.get("stale_locks"), t.get("stuck")) or t.get("error") or "broken",
                           "trace_href": href, "trace_cmd": cmd, "replay": t.get("replay", "")})
    shown = {b["seed"]: b for b in broken}
    causes = []
    for c in by_cause(trials):
        # the smallest trial to read first; the trace of the first of the cause's trials that has one
        traced = next((shown[t["seed"]] for t in c["trials"] if t.get("trace")), None)
        causes.append({**c, "smallest": shown[c["smallest"]["seed"]], "traced": traced})
    return render("campaign.html", root, s=summary, trials=trials[:TRIALS_SHOWN], broken=broken, causes=causes,
                  plots=plots(summary), **context)


def _trace_links(t: dict[str, Any], trace_base: str, static: bool) -> tuple[str | None, str | None]:
    """A broken trial's trace: a link to the picture drawn when the run was kept; past
    MAX_TRACES, in xcon serve, a link that draws it on asking from the trial's kept run-dir; on a
    static page, which cannot draw, the command that does. (None, None) for a trial with no
    run-dir or finding to draw."""
    if t.get("trace"):
        return trace_base + quote(t["trace"]), None
    if not (t.get("run_dir") and t.get("violations")):
        return None, None
    if not static:
        return f"{trace_base}trace/{t['seed']}", None
    return None, (f"xcon trace {shlex.quote(t['violations'][0]['msg_id'])} --run-dir {shlex.quote(t['run_dir'])} "
                  f"--svg trace-{t['seed']}.svg")


def static_campaign(summary: dict[str, Any]) -> str:
    """The page as a file beside summary.json: its links are relative, its pictures beside it."""
    return campaign_page(summary, trace_base="", static=True, run_dir=summary.get("store", ""))


PER_TRIAL_POINTS = 500


def plots(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The campaign's plots as inline SVG: lost pairs per trial, the delivery latency of each trial,
    and faults injected against copies delivered, second by second, over all trials."""
    if summary.get("kind") == "explore":
        return [("bob's copy by send time (red: lost, blue: NDR, pale: delivered)", explore_map(summary))]
    trials = summary.get("trials") or []
    if not trials:
        return []
    import pygal

    style = pygal.style.Style(background="white", plot_background="white", font_family="DejaVu Sans, sans-serif")
    small = {"width": 560, "height": 260, "style": style, "show_legend": True, "explicit_size": True,
             "disable_xml_declaration": True, "js": [], "truncate_label": -1}
    out = []
    # past PER_TRIAL_POINTS trials a point is a run of consecutive trials (the worst of them):
    # 20,000 bars took pygal 7 s to draw, for a picture nobody could read
    every = -(-len(trials) // PER_TRIAL_POINTS)
    runs = [trials[i:i + every] for i in range(0, len(trials), every)]
    per = "trial" if every == 1 else f"trials, {every:,} a point (the worst of them)"
    worst = {kind: [max(t.get("counts", {}).get(kind, 0) for t in run) for run in runs] for kind in ("lost", "duplicated")}
    lost = pygal.Bar(title="lost pairs per trial", x_title=per, y_labels=round_ticks(max(map(max, worst.values()))),
                     **small)
    for kind in ("lost", "duplicated"):
        lost.add(kind, worst[kind])
    out.append(("lost pairs per trial", lost.render(is_unicode=True)))
    points = {key: [max((v for t in run if (v := (t.get("latency_ms") or {}).get(key)) is not None), default=None)
                    for run in runs] for key in ("p50", "p99", "max")}
    highest = max((v for values in points.values() for v in values if v is not None), default=0)
    latency = pygal.Line(title="delivery latency per trial (ms)", x_title=per, y_labels=round_ticks(highest), **small)
    for key in ("p50", "p99", "max"):
        latency.add(key, points[key])
    out.append(("delivery latency", latency.render(is_unicode=True)))
    seconds = max((len(t.get("deliveries_per_s") or []) for t in trials), default=0)
    delivered, faults = [0] * seconds, [0] * seconds
    for t in trials:
        for i, n in enumerate(t.get("deliveries_per_s") or []):
            delivered[i] += n
        for f in (t.get("world") or {}).get("faults", []):
            second = int(f.get("at", 0))
            if 0 <= second < seconds:
                faults[second] += 1
    if seconds:
        over_time = pygal.Line(title="faults injected and copies delivered, by second of the trials", x_title="s",
                               secondary_range=(0, max(faults) or 1), y_labels=round_ticks(max(delivered)), **small)
        over_time.add("delivered", delivered)
        over_time.add("faults", faults, secondary=True)
        out.append(("faults against deliveries over time", over_time.render(is_unicode=True)))
    return out


def round_ticks(highest: float, most: int = 6) -> list[float]:
    """An axis's ticks at whole, round steps (1, 2 or 5 times a power of ten) from 0 to `highest`
    or just past it, at most about `most` of them: pygal's own were at values such as 6.363636364
    (issue 33). Every axis here counts something (pairs, copies, ms): no step under 1."""
    if highest <= 0:
        return [0, 1]
    step = 10 ** max(0, math.floor(math.log10(highest / most)))
    for factor in (1, 2, 5, 10):
        if highest / (step * factor) <= most:
            step *= factor
            break
    return [i * step for i in range(math.ceil(highest / step) + 1)]


def explore_map(summary: dict[str, Any]) -> str:
    """`xcon sim explore`'s map as a heat map: a row per (lag, retry, copy), a cell per send time,
    red where bob's copy was lost, blue where an NDR said so, pale where it was delivered."""
    colours = {".": "#e8f3ea", "n": "#9db8e0", "X": "#c00000"}
    rows = summary.get("rows") or []
    cell, left, top = 9, 150, 24
    width = max((len(r["strip"]) for r in rows), default=0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width * cell + 20}" '
           f'height="{top + len(rows) * cell + 30}" font-family="DejaVu Sans Mono, monospace" font-size="9">',
           f'<text x="0" y="12">lag/retry/copy ms</text><text x="{left}" y="12">send time: '
           f'{-summary.get("before_s", 0):+g} s, one cell per {summary.get("step_s", 0):g} s</text>']
    for i, r in enumerate(rows):
        y = top + i * cell
        out.append(f'<text x="0" y="{y + cell - 1}">{r["lag_ms"]}/{r["retry_ms"]}/{r["copy_ms"]}</text>')
        for j, mark in enumerate(r["strip"]):
            out.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                       f'fill="{colours.get(mark, "#999")}"/>')
    out.append("</svg>")
    return "".join(out)
