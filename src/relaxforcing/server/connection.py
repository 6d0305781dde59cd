"""One page's WebSocket: its commands (start, switch, stop) in, its job's messages and frames out."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from relaxforcing.sampling.session import DEFAULT_RECACHE_FRAMES
from relaxforcing.server.jobs import MAX_RECACHE_FRAMES, Job, JobBoard, check_int, check_prompt


class Connection:
    """Runs at most one job at a time for an accepted socket and stops it when the socket closes.

    Worker threads hand messages to :meth:`send`; a task on the event loop forwards them in order. Bad input is
    answered with an ``error`` message and the connection stays open.
    """

    def __init__(self, ws: WebSocket, board: JobBoard):
        self.ws = ws
        self.board = board
        self.job: Job | None = None
        self.seq = 0
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict | bytes | None] = asyncio.Queue()

    def send(self, item: dict | bytes) -> None:
        """Queue a message for the page; safe to call from any thread."""
        with suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)

    async def serve(self) -> None:
        """Read commands until the socket closes, then stop the job at its next chunk boundary."""
        sender = asyncio.create_task(self._pump())
        try:
            while True:
                received = await self.ws.receive()
                if received["type"] == "websocket.disconnect":
                    break
                try:
                    await self.handle(json.loads(received.get("text") or "null"))
                except ValueError as error:
                    self.send({"type": "error", "message": " ".join(str(error).split())})
        except WebSocketDisconnect:
            pass
        finally:
            if self.job is not None:
                self.job.stop()
            self.outbox.put_nowait(None)
            with suppress(Exception, asyncio.CancelledError):  # the socket may be gone: nothing left to flush
                await asyncio.wait_for(sender, timeout=1)

    async def handle(self, message: object) -> None:
        """Act on one command; raises ValueError for anything malformed."""
        if not isinstance(message, dict):
            raise ValueError("messages must be JSON objects")
        kind = message.get("type")
        if kind == "start":
            if self.job is not None:
                self.job.stop()
                await run_in_threadpool(self.job.thread.join)
            request = await run_in_threadpool(self.board.parse, message)
            self.seq += 1
            self.job = self.board.start(request, self.send, self.seq)
        elif kind == "switch":
            if self.job is None or self.job.finished:
                raise ValueError("nothing is being generated; start a video first")
            prompt = await run_in_threadpool(check_prompt, self.board.pipeline, message.get("prompt"))
            recache = check_int("recache", message.get("recache", DEFAULT_RECACHE_FRAMES), 0, MAX_RECACHE_FRAMES)
            self.job.request_switch(prompt, recache)
            self.send({"type": "switch_queued", "job": self.job.id, "prompt": prompt, "recache": recache})
        elif kind == "stop":
            if self.job is not None:
                self.job.stop()
        else:
            raise ValueError(f"unknown message type {kind!r}; expected start, switch or stop")

    async def _pump(self) -> None:
        while (item := await self.outbox.get()) is not None:
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_text(json.dumps(item))
