"""xcon serve: a Starlette app over one run-dir, served by uvicorn on 127.0.0.1 by default.

    /                         the cluster, live (server-sent events from /events)
    /messages[?outcome=lost]  every pair with its outcome as `xcon check` judges it
    /messages/{id}            a message: where it is, its headers and text (an NDR as its report), its story
    /campaigns                every campaign and scenario run kept in results/, newest first
    /campaigns/{run}          one: its figures, plots, broken trials with replay commands and traces
    /campaigns/{run}/{file}   a file the run kept (a trace picture, summary.json)

Every page answers JSON to a request that accepts application/json (or with ?format=json): the
same paths are the API. Reading is all it does: it changes nothing in the run-dir.

It answers only the host names it was started for (`allowed_hosts`: a Host check, as Django's
ALLOWED_HOSTS), so a page on another site whose name an attacker points at 127.0.0.1 (DNS
rebinding) reads nothing; and every answer says that no other site may frame it, and that a page
runs only this server's own script (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrator.inspect import trace as trace_mod
from orchestrator.inspect.check import OUTCOMES

from . import data, pages


def wants_json(request: Request) -> bool:
    return request.query_params.get("format") == "json" or \
        "application/json" in request.headers.get("accept", "").split(",")[0]


# what a page may load: its own script (the live cluster's, /live.js) and its own event stream;
# styles inline (the SVG pictures carry theirs); no other site may frame it
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
# the one script of these pages: swap the live part when the server sends a newer one
LIVE_JS = 'new EventSource("events").onmessage = (e) => { document.getElementById("live").innerHTML = e.data; };\n'
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def allowed_hosts(host: str, more: tuple[str, ...] = ()) -> list[str]:
    """The Host names a server listening on `host` answers: loopback's, the address itself, and
    for an address beyond loopback this machine's names and `more` (`xcon serve --allow-host`)."""
    import socket

    names = [*LOOPBACK, *more]
    if host not in ("0.0.0.0", "::", ""):
        names.append(f"[{host}]" if ":" in host else host)
    if host not in LOOPBACK:
        names += [socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys(names))


class SecurityHeaders:
    """An ASGI middleware that adds SECURITY_HEADERS to every answer."""

    def __init__(self, app: Any):
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, with_headers)


class Pages:
    """The pages over one run-dir: each method answers one route of the module's docstring."""

    def __init__(self, run_dir: Path, every: float):
        self.run_dir, self.every = run_dir, every  # every: how often the live page looks again
        self.common = {"run_dir": str(run_dir)}

    def routes(self) -> list[Route]:
        return [
            Route("/", self.cluster), Route("/events", self.events), Route("/live.js", self.live_js),
            Route("/messages", self.messages), Route("/messages/{msg_id:path}", self.message),
            Route("/campaigns", self.campaigns), Route("/campaigns/{run}", self.campaign),
            Route("/campaigns/{run}/cases/{case:int}/messages/{msg_id:path}", self.case_message),
            Route("/campaigns/{run}/trace/{seed:int}", self.trial_trace),
            Route("/campaigns/{run}/{file}", self.kept_file),
        ]

    def page(self, request: Request, template: str, found: Any, **context: Any) -> Response:
        if wants_json(request):
            return JSONResponse(found, headers={"cache-control": "no-store"})
        return HTMLResponse(pages.render(template, **self.common, **context))

    async def cluster(self, request: Request) -> Response:
        c = await asyncio.to_thread(data.cluster, self.run_dir)
        return self.page(request, "cluster.html", c, c=c)

    async def events(self, request: Request) -> Response:
        async def stream():
            last = None
            while not await request.is_disconnected():
                c = await asyncio.to_thread(data.cluster, self.run_dir)
                html = pages.render("cluster_live.html", c=c)
                if html != last:
                    last = html
                    yield "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
                await asyncio.sleep(self.every)
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def messages(self, request: Request) -> Response:
        outcome = request.query_params.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            return JSONResponse({"error": f"no outcome {outcome!r} (outcomes: {', '.join(OUTCOMES)})"}, 400)
        found = await asyncio.to_thread(data.messages, self.run_dir, outcome)
        return self.page(request, "messages.html", found, **found)

    async def message(self, request: Request) -> Response:
        found = await asyncio.to_thread(data.message, self.run_dir, request.path_params["msg_id"])
        if not found["places"] and not found["story"]:
            return JSONResponse({"error": f"no message {found['msg_id']!r} in {self.run_dir}"}, 404) \
                if wants_json(request) else HTMLResponse(pages.render("message.html", **self.common, **found), 404)
        return self.page(request, "message.html", {k: v for k, v in found.items() if k != "svg"}, **found)

    async def campaigns(self, request: Request) -> Response:
        found = await asyncio.to_thread(data.campaigns, self.run_dir)
        return self.page(request, "campaigns.html", found, runs=found, results=str(self.run_dir / "results"))

    async def campaign(self, request: Request) -> Response:
        folder = request.path_params["run"]
        found = await asyncio.to_thread(data.campaign, self.run_dir, folder)
        if found is None:
            return JSONResponse({"error": f"no kept run {folder!r}"}, 404)
        summary, _ = found
        if wants_json(request):
            return JSONResponse(summary)
        return HTMLResponse(pages.campaign_page(summary, trace_base=f"/campaigns/{folder}/", **self.common))

    async def case_message(self, request: Request) -> Response:
        """A message of a scenario's case, read in that case's own run-dir (the summary names it)."""
        found = await asyncio.to_thread(data.campaign, self.run_dir, request.path_params["run"])
        cases = (found[0].get("cases") or []) if found else []
        index = request.path_params["case"]
        where = cases[index].get("run_dir") if 0 <= index < len(cases) else None
        if not where or not Path(where).is_dir():
            return JSONResponse({"error": "no such case, or its run-dir is gone"}, 404)
        shown = await asyncio.to_thread(data.message, Path(where), request.path_params["msg_id"])
        return self.page(request, "message.html", {k: v for k, v in shown.items() if k != "svg"}, **shown)

    async def trial_trace(self, request: Request) -> Response:
        """The trace of a kept broken trial's first finding, drawn from its run-dir on asking: past
        the pictures drawn when the run was kept (orchestrator.lab.results.MAX_TRACES)."""
        found = await asyncio.to_thread(data.campaign, self.run_dir, request.path_params["run"])
        seed = request.path_params["seed"]
        trial = next((t for t in (found[0].get("trials") or []) if t.get("seed") == seed), None) if found else None
        if not trial or not trial.get("run_dir") or not trial.get("violations") or not Path(trial["run_dir"]).is_dir():
            return JSONResponse({"error": f"no kept broken trial {seed}"}, 404)
        msg_id = trial["violations"][0]["msg_id"]
        story = await asyncio.to_thread(trace_mod.story, Path(trial["run_dir"]), msg_id)
        return Response(trace_mod.svg(story, msg_id), media_type="image/svg+xml") if story else \
            JSONResponse({"error": f"no node logged {msg_id}"}, 404)

    async def kept_file(self, request: Request) -> Response:
        found = data.campaign(self.run_dir, request.path_params["run"])
        name = request.path_params["file"]
        if found is None or "/" in name or name.startswith(".") or not (found[1] / name).is_file():
            return JSONResponse({"error": "no such file"}, 404)
        return FileResponse(found[1] / name)

    async def live_js(self, request: Request) -> Response:
        return Response(LIVE_JS, media_type="text/javascript")


def app(run_dir: Path, every: float = 1.0, hosts: list[str] | None = None) -> Starlette:
    """The app over `run_dir`; `hosts`: the Host names it answers (allowed_hosts("127.0.0.1") by default)."""
    return Starlette(routes=Pages(run_dir.resolve(), every).routes(),
                     middleware=[Middleware(SecurityHeaders),
                                 Middleware(TrustedHostMiddleware, allowed_hosts=hosts or allowed_hosts("127.0.0.1"))])


def serve(run_dir: Path, host: str, port: int, every: float = 1.0, hosts: list[str] | None = None) -> None:
    import uvicorn

    uvicorn.run(app(run_dir, every, hosts), host=host, port=port, log_level="warning")
