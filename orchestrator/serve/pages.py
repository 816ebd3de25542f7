"""xcon serve's pages: Jinja2 templates (templates/) rendered on the server, and the campaign's
plots as SVG (pygal). `static_campaign` renders a kept campaign's page to a file, the same page
the server shows, for `index.html` in the results store and `xcon chaos --report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from .data import TRIALS_SHOWN

ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=jinja2.select_autoescape(("html",)), trim_blocks=True, lstrip_blocks=True)


def render(template: str, root: str = "", **context: Any) -> str:
    return ENV.get_template(template).render(root=root, **context)


def campaign_page(summary: dict[str, Any], root: str = "", trace_base: str = "", **context: Any) -> str:
    """A campaign's (or scenario run's) page; trace links are `trace_base` + the picture's file."""
    trials = summary.get("trials") or []
    broken = []
    for t in trials:
        if t.get("broken"):
            replay = (summary.get("replay") or "").rsplit("--replay", 1)
            flags = replay[1].split(None, 1)[1] if len(replay) == 2 and " " in replay[1].strip() else ""
            broken.append({"seed": t["seed"], "what": _what(t), "run_dir": t.get("run_dir"), "trace": t.get("trace"),
                           "trace_href": trace_base + quote(t["trace"]) if t.get("trace") else None,
                           "replay": f"xcon chaos {'--sim ' if summary.get('simulated') else ''}--replay {t['seed']} "
                                     + flags.strip()})
    return render("campaign.html", root, s=summary, trials=trials[:TRIALS_SHOWN], broken=broken,
                  plots=plots(summary), **context)


def _what(trial: dict[str, Any]) -> str:
    """What broke first in a trial (as `xcon chaos` says it)."""
    if trial.get("violations"):
        v = trial["violations"][0]
        return f"{v['outcome']} {v['msg_id']} -> {v['rcpt']}"
    if trial.get("stale_locks"):
        lock = trial["stale_locks"][0]
        return f"stale lock on store.{lock['server']}: {lock['mailbox']} held by {lock['owner']}"
    return trial.get("error") or "broken"


def static_campaign(summary: dict[str, Any]) -> str:
    """The page as a file beside summary.json: its links are relative, its pictures beside it."""
    return campaign_page(summary, trace_base="", static=True, run_dir=summary.get("store", ""))


def plots(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The campaign's plots as inline SVG: lost pairs per trial, the delivery latency of each trial,
    and faults injected against copies delivered, second by second, over all trials."""
    trials = summary.get("trials") or []
    if not trials:
        return []
    import pygal

    style = pygal.style.Style(background="white", plot_background="white", font_family="DejaVu Sans, sans-serif")
    small = {"width": 560, "height": 260, "style": style, "show_legend": True, "explicit_size": True,
             "disable_xml_declaration": True, "js": [], "truncate_label": -1}
    out = []
    lost = pygal.Bar(title="lost pairs per trial", x_title="trial", **small)
    lost.add("lost", [t.get("counts", {}).get("lost", 0) for t in trials])
    lost.add("duplicated", [t.get("counts", {}).get("duplicated", 0) for t in trials])
    out.append(("lost pairs per trial", lost.render(is_unicode=True)))
    latency = pygal.Line(title="delivery latency per trial (ms)", x_title="trial", **small)
    for key in ("p50", "p99", "max"):
        latency.add(key, [(t.get("latency_ms") or {}).get(key) for t in trials])
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
                               secondary_range=(0, max(faults) or 1), **small)
        over_time.add("delivered", delivered)
        over_time.add("faults", faults, secondary=True)
        out.append(("faults against deliveries over time", over_time.render(is_unicode=True)))
    return out


def explore_map(points: list[dict[str, Any]], x: str, y: str, value: str) -> str:
    """`xcon sim explore`'s map as a heat map: a cell per (x, y), darker the more it lost."""
    xs, ys = sorted({p[x] for p in points}), sorted({p[y] for p in points})
    top = max((p[value] for p in points), default=0) or 1
    cell = 14
    cells = [f'<rect x="{60 + xs.index(p[x]) * cell}" y="{10 + (len(ys) - 1 - ys.index(p[y])) * cell}" width="{cell}" '
             f'height="{cell}" fill="rgb(200,{int(220 - 200 * p[value] / top)},{int(220 - 200 * p[value] / top)})">'
             f'<title>{x}={p[x]} {y}={p[y]}: {p[value]}</title></rect>' for p in points]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{80 + len(xs) * cell}" height="{40 + len(ys) * cell}">'
            + "".join(cells) + f'<text x="60" y="{30 + len(ys) * cell}" font-size="11">{x}</text>'
            f'<text x="0" y="20" font-size="11">{y}</text></svg>')
