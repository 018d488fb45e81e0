"""`explore serve`: the page, live, on a Starlette app served by uvicorn (a well-kept ASGI stack).

Thin: it checks who is asking and what, hands the work to an `explorer.studio.Studio`, and streams
what the studio's jobs report (server-sent events). What it serves:

    GET  /?token=T                the page (sets the token as a cookie for what follows)
    GET  /page.js, /page.css, /data.js, /live.js, ...   the page's own files (built once at start)
    GET  /api/runs                the runs kept under --runs, newest first
    GET  /api/runs/NAME           one run as the page shows it (a generation record, read)
    GET  /api/runs/NAME/image.png, /api/runs/NAME/steps/K/PART.png    its images, by step and tile
    GET  /api/experiments/NAME, /api/sweeps/NAME                       an experiment, a sweep
    POST /api/jobs                {"kind": "generate" | "experiment" | "sweep", ...settings}: queued
    GET  /api/jobs/ID/events      what the job reports, as it happens (text/event-stream)
    POST /api/jobs/ID/stop        stop at the next step, keeping what was done

Safe on a shared machine: it binds to 127.0.0.1 unless told otherwise; every request carries the
token printed at start (in the URL once, then a cookie, or an X-SD-Token header); a request whose
Origin or Host is not the page's is refused; bodies are small JSON; the model is chosen at start-up
and no request names a file. Refusals are 4xx with one sentence, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError
from explorer.studio import Busy, Studio

MAX_BODY = 16 * 1024  # bytes: a request is a prompt and a few settings
COOKIE = "sd_explorer_token"
PAGE_FILES = {"page.js": "text/javascript", "page.css": "text/css", "data.js": "text/javascript",
              "figures-en.js": "text/javascript", "figures-zh.js": "text/javascript", "live.js": "text/javascript",
              "live.css": "text/css", "en.html": "text/html", "zh.html": "text/html", "index.html": "text/html"}
TILE_NAMES = ("latent", "uncond", "cond", "guided", "x0")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def refusal(status: int, sentence: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": sentence}, status_code=status)


class Guard:
    """ASGI middleware: the token, the Host, the Origin and the body's size, before any route runs."""

    def __init__(self, app, token: str, hosts: set[str]):
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request

        request = Request(scope)
        problem = self.problem(request)
        if problem is not None:
            return await refusal(*problem)(scope, receive, send)
        return await self.app(scope, receive, send)

    def problem(self, request) -> tuple[int, str] | None:
        if request.headers.get("host", "") not in self.hosts:
            return 403, "This server answers its own address only (127.0.0.1): the Host header names another."
        origin = request.headers.get("origin")
        if origin is not None and origin.removeprefix("http://") not in self.hosts:
            return 403, "Requests from another page are refused: open the page this server printed."
        given = request.query_params.get("token") or request.headers.get("x-sd-token") or request.cookies.get(COOKIE) or ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return 403, "The token is missing or wrong: open the URL `explore serve` printed (it carries the token)."
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return 413, f"The request's body is larger than {MAX_BODY // 1024} kB; the page sends a prompt and a few settings."
        return None


def build_app(studio: Studio, page: Path, token: str, hosts: set[str]):
    """The Starlette app: the page's files from `page` (a folder `explorer.site.build` wrote) and the API."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    api = Api(studio, page, token)
    routes = [
        Route("/", api.index),
        Route("/{name:str}", api.page_file),
        Route("/api/runs", api.runs),
        Route("/api/runs/{name:str}", api.run),
        Route("/api/runs/{name:str}/image.png", api.image),
        Route("/api/runs/{name:str}/steps/{step:int}/{part:str}.png", api.tile),
        Route("/api/runs/{name:str}/{run:str}/image.png", api.image),  # an experiment's baseline and edited
        Route("/api/runs/{name:str}/{run:str}/steps/{step:int}/{part:str}.png", api.tile),
        Route("/api/experiments/{name:str}", api.experiment),
        Route("/api/sweeps/{name:str}", api.sweep),
        Route("/api/sweeps/{name:str}/images/{k:int}.png", api.sweep_image),
        Route("/api/jobs", api.submit, methods=["POST"]),
        Route("/api/jobs/{job:str}/events", api.events),
        Route("/api/jobs/{job:str}/stop", api.stop, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, lambda request, exc: refusal(404, "There is nothing here: the page's API is under /api/."))
    app.add_exception_handler(405, lambda request, exc: refusal(405, "This address does not take that method."))
    return Guard(app, token, hosts)


class Api:
    """The routes: each reads what it needs, asks the studio, answers JSON, a PNG or events."""

    def __init__(self, studio: Studio, page: Path, token: str):
        self.studio, self.page, self.token = studio, page, token

    async def index(self, request):
        from starlette.responses import HTMLResponse

        name = "zh.html" if self.studio.lang == "zh" else "en.html"
        response = HTMLResponse((self.page / name).read_text(encoding="utf-8"), headers={"Content-Security-Policy": CSP})
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return response

    async def page_file(self, request):
        from starlette.responses import Response

        name = request.path_params["name"]
        if name not in PAGE_FILES or not (self.page / name).is_file():
            return refusal(404, f"The page has no file {name!r}.")
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        return Response((self.page / name).read_bytes(), media_type=PAGE_FILES[name], headers=headers)

    async def runs(self, request):
        from starlette.responses import JSONResponse

        listed = await asyncio.to_thread(self.studio.listing)  # records read off the event loop
        return JSONResponse({"runs": listed, "busy": self.studio.current is not None, "waiting": self.studio.queue.qsize()})

    async def run(self, request):
        return await answered(lambda: with_texts(run_page(self.studio.folder(request.path_params["name"])), "run"))

    async def image(self, request):
        p = request.path_params
        return await png_of(lambda: (self.studio.folder(p["name"], p.get("run")) / "image.png").read_bytes())

    async def tile(self, request):
        p = request.path_params
        return await png_of(lambda: tile_png(self.studio.folder(p["name"], p.get("run")), p["step"], p["part"]))

    async def experiment(self, request):
        return await answered(lambda: with_texts(experiment_page(self.studio.folder(request.path_params["name"])), "experiment"))

    async def sweep(self, request):
        return await answered(lambda: with_texts(sweep_page(self.studio.folder(request.path_params["name"])), "sweep"))

    async def sweep_image(self, request):
        from explorer.experiments import sweep_image

        p = request.path_params
        return await png_of(lambda: (self.studio.folder(p["name"]) / sweep_image(p["k"])).read_bytes())

    async def submit(self, request):
        from starlette.responses import JSONResponse

        body = await request.body()
        if len(body) > MAX_BODY:
            return refusal(413, f"The request's body is larger than {MAX_BODY // 1024} kB.")
        try:
            asked = json.loads(body or b"{}")
        except ValueError:
            return refusal(400, "The request's body is not JSON: the page sends {\"kind\": ..., \"prompt\": ...}.")
        if not isinstance(asked, dict):
            return refusal(400, "The request's body must be a JSON object.")
        try:
            job = await asyncio.to_thread(self.studio.submit, str(asked.pop("kind", "generate")), asked)
        except Busy as exc:
            return refusal(429, str(exc))
        except ExplorerError as exc:
            return refusal(400, exc.for_cli().removeprefix("--") if hasattr(exc, "for_cli") else str(exc))
        return JSONResponse({"job": job.id, "kind": job.kind, "folder": job.folder.name}, status_code=202)

    async def events(self, request):
        from starlette.responses import StreamingResponse

        job = self.studio.jobs.get(request.path_params["job"])
        if job is None:
            return refusal(404, "No job of that name on this server.")
        return StreamingResponse(stream(job), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def stop(self, request):
        from starlette.responses import JSONResponse

        job = self.studio.jobs.get(request.path_params["job"])
        if job is None:
            return refusal(404, "No job of that name on this server.")
        job.stop()
        return JSONResponse({"job": job.id, "status": job.status}, status_code=202)


async def stream(job):
    """The job's events as server-sent events, from the first, as they come; when the page goes
    away (the tab closed) before the job ends, the job stops at its next step."""
    sent = 0
    try:
        while True:
            events = job.since(sent)
            for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            sent += len(events)
            if job.finished and sent >= len(job.events):
                return
            await asyncio.sleep(0.02)
    finally:
        if not job.finished:
            job.stop()


async def answered(work):
    from starlette.responses import JSONResponse

    try:
        return JSONResponse(await asyncio.to_thread(work))
    except ExplorerError as exc:
        return refusal(404, str(exc))


async def png_of(work):
    from starlette.responses import Response

    try:
        return Response(await asyncio.to_thread(work), media_type="image/png", headers={"Cache-Control": "no-store"})
    except (ExplorerError, OSError, ValueError) as exc:
        return refusal(404, str(exc) if isinstance(exc, ExplorerError) else "That image is not there (yet).")


@lru_cache(maxsize=1000)
def tile_names(folder: Path) -> tuple[str, ...]:
    """The tiles of a run folder's step previews, as its record says: fixed when the run starts, so
    read once a run, not at each tile."""
    from explorer.runs import preview_tiles, read_record

    return tuple(preview_tiles(read_record(folder)) or ())


def tile_png(folder: Path, step: int, part: str) -> bytes:
    """One tile of a step's previews, cut from the strip the run wrote (names made here)."""
    from PIL import Image

    from explorer.previews import png
    from explorer.runs import cut_tiles, preview_file

    if part not in TILE_NAMES or not 0 <= step < 10_000:
        raise ExplorerError(f"A step has the tiles {', '.join(TILE_NAMES)}; {part!r} is not one.")
    tiles = list(tile_names(folder))
    if part not in tiles:
        raise ExplorerError(f"This run recorded {', '.join(tiles) or 'no tile'}.")
    with Image.open(folder / preview_file(step)) as strip:
        return png(cut_tiles(strip.convert("RGB"), tiles)[part])


def with_texts(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data` with the Chinese of the sentences its records say, for the page in Chinese."""
    from explorer.views.page import record_texts
    from explorer.views.strings import translations

    data["texts"] = translations(record_texts({"components": {}, key: data}), "zh")
    return data


def run_page(folder: Path, prefix: str = "") -> dict[str, Any]:
    """A run folder as the page shows it (the shape explorer.site gives --run), its images as URLs."""
    from explorer.runs import read_record
    from explorer.site import blocks_by_path, page_maps

    record = read_record(folder)
    steps = [s for s in record.get("steps", []) if isinstance(s, dict)]
    base = f"/api/runs/{prefix}{folder.name}"
    tiles = [t for t in TILE_NAMES if t in (record.get("files", {}) or {}).get("tiles", [])]
    return {
        "name": prefix + folder.name,
        "image": f"{base}/image.png" if (folder / "image.png").is_file() else None,
        "settings": record.get("settings", {}),
        "tokens": record.get("tokens", []),
        "steps": [{key: s.get(key) for key in ("index", "timestep", "seconds", "shapes", "latent_stats")} for s in steps],
        "status": record.get("status", ""),
        "unet_calls": record.get("unet_calls", ""),
        "previews": {k: f"{base}/steps/{k}/latent.png" for k in range(len(steps))},
        "guidance": {k: {p: f"{base}/steps/{k}/{p}.png" for p in tiles if p != "latent"} for k in range(len(steps))},
        "blocks": blocks_by_path(steps),
        "maps": page_maps(record, folder, len(steps)),
    }


def experiment_page(folder: Path) -> dict[str, Any]:
    """An experiment folder for the page: the experiment as explorer.site shows it, its runs by URL."""
    from explorer.experiments import load_experiment
    from explorer.views.experiment import summary

    shown = load_experiment(folder)
    record = shown.record
    steps = [s for s in record.get("steps", []) if isinstance(s, dict)]
    blocks = [b for b in record.get("blocks", []) if isinstance(b, str)]
    runs = {name: run_page(folder / name, prefix=f"{folder.name}/") for name in ("baseline", "edited")
            if (folder / name / "trace.json").is_file()}
    return {"name": folder.name, "summary": summary(record), "settings": record.get("settings", {}),
            "edits": [{"text": e.get("text", ""), "kind": e.get("kind", "")} for e in record.get("edits", [])],
            "image": record.get("image"), "judge": record.get("judge"), "entered": record.get("entered"),
            "x0": [s.get("x0") for s in steps], "change": {b: [s["blocks"].get(b, 0.0) for s in steps] for b in blocks},
            "runs": runs}


def sweep_page(folder: Path) -> dict[str, Any]:
    from explorer.experiments import load_sweep
    from explorer.views.experiment import judged

    shown = load_sweep(folder)
    base = f"/api/sweeps/{folder.name}"
    modules = [{k: m.get(k) for k in ("path", "type", "level", "size", "change", "changed_pixels")}
               | {"image": f"{base}/images/{k}.png", "judged": judged(m.get("judge"))} for k, m in enumerate(shown.modules)]
    return {"name": folder.name, "settings": shown.record.get("settings", {}), "edit": shown.record.get("edit"),
            "factor": shown.record.get("factor"), "baseline": f"/api/runs/{folder.name}/baseline/image.png",
            "modules": modules, "skipped": shown.record.get("skipped", [])}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def check_port(host: str, port: int) -> None:
    """One sentence, before anything is built, when the address cannot be served."""
    import socket

    from explorer.errors import OptionError

    if not 1 <= port <= 65535:
        raise OptionError("port", f"must be between 1 and 65535, got {port}.")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise OptionError("port", f"{port} cannot be served on {host} ({exc.strerror}): another program may use it; "
                          f"give another, e.g. --port {port + 1}.") from None


def page_folder(studio: Studio, folder: Path) -> Path:
    """The page's files for the studio's model, written once into `folder`: explorer.site's page,
    with the live part (live.js, live.css) and the API's address allowed."""
    from explorer.components import COMPONENTS
    from explorer.explore import TraceRequest, trace_cached
    from explorer.generation.settings import SCHEDULERS, own_scheduler
    from explorer.site import build

    traces = {c: trace_cached(TraceRequest(c, studio.model, "meta", flops=True))[0] for c in COMPONENTS}
    live = {"schedulers": list(SCHEDULERS), "scheduler": own_scheduler(studio.scheduler_config)}
    build(folder, traces, lang=studio.lang, live=live)
    return folder


def serve_page(*, model: str, port: int, runs: Path, host: str, lang: str, open_page: bool, say) -> str:
    """Build the pipeline and the page, then serve them until Ctrl-C; returns the URL it served."""
    import tempfile
    import threading
    import webbrowser

    import uvicorn

    say(f"Building {model} and its page…")
    studio = Studio(model, runs, lang)
    page = page_folder(studio, Path(tempfile.mkdtemp(prefix="sd-explorer-page-")) / "site")
    token = new_token()
    shown_host = f"[{host}]" if ":" in host else host
    hosts = {f"{shown_host}:{port}"} | ({f"localhost:{port}"} if host in ("127.0.0.1", "::1", "localhost") else set())
    url = f"http://{shown_host}:{port}/?token={token}"
    if host not in ("127.0.0.1", "::1", "localhost"):
        say(f"Warning: serving on {host}, reachable from other machines that can reach it; anyone with the URL "
            "(its token) can run the model here.")
    server = uvicorn.Server(uvicorn.Config(build_app(studio, page, token, hosts), host=host, port=port,
                                           log_level="warning", lifespan="off"))
    say(f"Serving {model} at {url}\n(the token in it is the key: share the URL only with whom you would let run "
        f"the model; Ctrl-C stops)")
    if open_page:
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    try:
        server.run()
    finally:
        studio.close()
    return url
