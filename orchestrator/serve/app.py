"""xcon serve: a Starlette app over one run-dir, served by uvicorn on 127.0.0.1 by default.

    /                         the cluster, live (server-sent events from /events)
    /messages[?outcome=lost]  every pair with its outcome as `xcon check` judges it
    /messages/{id}            a message: where it is, its headers and text (an NDR as its report), its story
    /campaigns                every campaign and scenario run kept in results/, newest first
    /campaigns/{run}          one: its figures, plots, broken trials with replay commands and traces
    /campaigns/{run}/{file}   a file the run kept (a trace picture, summary.json)

Every page answers JSON to a request that accepts application/json (or with ?format=json): the
same paths are the API. Reading is all it does: it changes nothing in the run-dir.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrator.inspect.check import OUTCOMES

from . import data, pages


def wants_json(request: Request) -> bool:
    return request.query_params.get("format") == "json" or \
        "application/json" in request.headers.get("accept", "").split(",")[0]


def app(run_dir: Path, every: float = 1.0) -> Starlette:
    run_dir = run_dir.resolve()
    common = {"run_dir": str(run_dir)}

    def page(request: Request, template: str, found: Any, **context: Any) -> Response:
        if wants_json(request):
            return JSONResponse(found, headers={"cache-control": "no-store"})
        return HTMLResponse(pages.render(template, **common, **context))

    async def cluster(request: Request) -> Response:
        c = await asyncio.to_thread(data.cluster, run_dir)
        return page(request, "cluster.html", c, c=c)

    async def events(request: Request) -> Response:
        async def stream():
            last = None
            while not await request.is_disconnected():
                c = await asyncio.to_thread(data.cluster, run_dir)
                html = pages.render("cluster_live.html", c=c)
                if html != last:
                    last = html
                    yield "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
                await asyncio.sleep(every)
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def messages(request: Request) -> Response:
        outcome = request.query_params.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            return JSONResponse({"error": f"no outcome {outcome!r} (outcomes: {', '.join(OUTCOMES)})"}, 400)
        found = await asyncio.to_thread(data.messages, run_dir, outcome)
        return page(request, "messages.html", found, **found)

    async def message(request: Request) -> Response:
        found = await asyncio.to_thread(data.message, run_dir, request.path_params["msg_id"])
        if not found["places"] and not found["story"]:
            return JSONResponse({"error": f"no message {found['msg_id']!r} in {run_dir}"}, 404) if wants_json(request) \
                else HTMLResponse(pages.render("message.html", **common, **found), 404)
        return page(request, "message.html", {k: v for k, v in found.items() if k != "svg"}, **found)

    async def campaigns(request: Request) -> Response:
        found = await asyncio.to_thread(data.campaigns, run_dir)
        return page(request, "campaigns.html", found, runs=found, results=str(run_dir / "results"))

    async def campaign(request: Request) -> Response:
        folder = request.path_params["run"]
        found = await asyncio.to_thread(data.campaign, run_dir, folder)
        if found is None:
            return JSONResponse({"error": f"no kept run {folder!r}"}, 404)
        summary, _ = found
        if wants_json(request):
            return JSONResponse(summary)
        return HTMLResponse(pages.campaign_page(summary, trace_base=f"/campaigns/{folder}/", **common))

    async def kept_file(request: Request) -> Response:
        found = data.campaign(run_dir, request.path_params["run"])
        name = request.path_params["file"]
        if found is None or "/" in name or name.startswith(".") or not (found[1] / name).is_file():
            return JSONResponse({"error": "no such file"}, 404)
        return FileResponse(found[1] / name)

    return Starlette(routes=[
        Route("/", cluster), Route("/events", events), Route("/messages", messages),
        Route("/messages/{msg_id:path}", message), Route("/campaigns", campaigns),
        Route("/campaigns/{run}", campaign), Route("/campaigns/{run}/{file}", kept_file),
    ])


def serve(run_dir: Path, host: str, port: int, every: float = 1.0) -> None:
    import uvicorn

    uvicorn.run(app(run_dir, every), host=host, port=port, log_level="warning")
