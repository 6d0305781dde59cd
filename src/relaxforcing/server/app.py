"""The live viewer's web app: the page, its WebSocket protocol, mp4 downloads, and same-origin checks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from relaxforcing.codecs.base import Codec
from relaxforcing.memory import POLICIES
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.sampling.session import DEFAULT_RECACHE_FRAMES
from relaxforcing.server.connection import Connection
from relaxforcing.server.decoders import label
from relaxforcing.server.jobs import MAX_PANES, MAX_RECACHE_FRAMES, JobBoard

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
EXAMPLE_PROMPT = "a red circle and a small yellow square bouncing on a checkered navy background"
POLICY = "cross-origin or unknown host"
CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; script-src 'self'; style-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def static_dir() -> Path:
    return Path(str(resources.files("relaxforcing") / "server" / "static"))


def allowed_hosts_for(host: str) -> tuple[str, ...] | None:
    """Host names the server answers to when bound to ``host``; None (any) for a wildcard bind."""
    if host in ("0.0.0.0", "::", ""):
        return None
    return tuple(dict.fromkeys([host.strip("[]").lower(), *LOCAL_HOSTS]))


def host_name(host_header: str | None) -> str | None:
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``, ``"[::1]:80"`` -> ``"::1"``; None when malformed."""
    if not host_header:
        return None
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """True if the browser's ``Origin`` names the host the request was sent to (or no Origin was sent)."""
    if origin is None:
        return True  # not a browser: browsers always send Origin on WebSocket handshakes
    parsed = urlsplit(origin)
    return parsed.scheme in ("http", "https") and bool(host_header) and parsed.netloc.lower() == host_header.lower()


def create_app(
    pipeline: VideoPipeline,
    *,
    decoders: dict[str, Codec] | None = None,
    default_decoder: str | None = None,
    allowed_hosts: Sequence[str] | None = LOCAL_HOSTS,
    max_seconds: float = 60.0,
    max_jobs: int = 2,
    keep_jobs: int = 8,
) -> FastAPI:
    """The viewer for ``pipeline``.

    Args:
        decoders: the decoders a page may pick, by name (``decoders.offered_decoders``); default: the pipeline's
            own codec only.
        default_decoder: the one a page starts with; default: the first of ``decoders``.
        allowed_hosts: accepted ``Host`` header names (guards against DNS rebinding); None accepts any.
        max_seconds: longest video a page may ask for.
        max_jobs: generations running at once over all connections.
        keep_jobs: finished jobs whose mp4s stay downloadable.
    """
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
    folder = Path(tempfile.mkdtemp(prefix="relaxforcing-serve-"))
    try:
        board = JobBoard(pipeline, folder, max_seconds, max_jobs, keep_jobs, decoders, default_decoder)
    except ValueError:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(board.stop_all)
        shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title="relaxforcing viewer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.board = board

    def host_ok(host_header: str | None) -> bool:
        return hosts is None or host_name(host_header) in hosts

    @app.middleware("http")
    async def check_host(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not host_ok(request.headers.get("host")):
            return Response("unknown Host header", status_code=400)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        return response

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    async def config() -> JSONResponse:
        vocabulary = []
        if pipeline.name == "toy":
            from relaxforcing.toyworld.captions import VOCABULARY

            vocabulary = list(VOCABULARY)
        return JSONResponse({
            "model": pipeline.name, "fps": pipeline.fps, "policies": list(POLICIES), "max_panes": MAX_PANES,
            "max_seconds": max_seconds, "max_recache": MAX_RECACHE_FRAMES, "vocabulary": vocabulary,
            "decoders": [{"name": name, "label": label(name)} for name in board.decoders],
            "defaults": {"prompt": EXAMPLE_PROMPT if pipeline.name == "toy" else "", "memory": "relax",
                         "seconds": min(10.0, max_seconds), "seed": 42, "recache": DEFAULT_RECACHE_FRAMES,
                         "decoder": board.default_decoder},
        })

    @app.get("/video/{job_id}/{pane}.mp4")
    async def video(job_id: str, pane: int) -> FileResponse:
        job = board.jobs.get(job_id)
        if job is None or not 0 <= pane < len(job.paths) or not job.paths[pane].exists():
            raise HTTPException(404, "no such video")
        if not job.finished:
            raise HTTPException(409, "the video is still being generated")
        spec = job.request.memories[pane].split(":")[0]
        return FileResponse(job.paths[pane], media_type="video/mp4",
                            filename=f"relaxforcing_{spec}_seed{job.request.seed}_{job.request.decoder}.mp4")

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.websocket("/ws")
    async def socket(ws: WebSocket) -> None:
        host, origin = ws.headers.get("host"), ws.headers.get("origin")
        if not host_ok(host) or not same_origin(origin, host):
            await ws.close(code=1008, reason=POLICY)  # closed before accept: the handshake gets HTTP 403
            return
        await ws.accept()
        await Connection(ws, board).serve()

    return app
