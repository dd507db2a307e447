"""EDGE: PDFs rendered off the event loop, in warm worker processes that can be stopped.

WeasyPrint cannot be interrupted inside a render, and one document may run long or grow a
process's memory; so :class:`PDFRenderer` hands each render to one of a few spawned worker
processes (each warmed once by :func:`mailer.content.pdf.warm`), kills the one that overruns its
time, retires the one that grew too large, and keeps a small cache of results so that equal
input renders once. The render itself is :func:`mailer.content.pdf.render_document`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mailer.content.pdf import RenderedPDF, render_document, render_key, warm
from mailer.content.pdf_html import PDFError

log = logging.getLogger(__name__)


def _init_worker(parent: int) -> None:
    # fontTools stamps every font it subsets with the current time unless SOURCE_DATE_EPOCH is
    # set (reproducible-builds.org): fixed, a document renders to the same bytes in any worker.
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    threading.Thread(target=_exit_with, args=(parent,), name="orphan-watch", daemon=True).start()
    warm()


def _exit_with(parent: int, every: float = 1.0) -> None:
    """End this worker once the engine that started it is gone.

    A worker waits on its task queue forever; when the engine is killed (SIGKILL, OOM) nothing
    tells it to stop, and each restart would leave two more processes holding fonts in memory.
    Re-parenting is the sign, on every POSIX system.
    """
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


def resident_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``; 0 where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


# A job: document, context, assets, tenant CSS, page limit. A reply: ("ok", RenderedPDF, rss)
# or ("error", text, rss); the first message of a worker is ("ready", pid, rss).
_Job = tuple[str, dict[str, Any], dict[str, bytes | tuple[bytes, str]], str | None, int | None]
_Reply = tuple[str, Any, int]


def _serve(conn: Connection, parent: int) -> None:
    """A worker process: warm up, then render one job at a time until told to stop."""
    _init_worker(parent)
    conn.send(("ready", os.getpid(), resident_bytes()))
    while True:
        try:
            job: _Job | None = conn.recv()
        except (EOFError, OSError):  # the engine closed its end: nothing more will come
            return
        if job is None:
            return
        document, context, assets, tenant_css, max_pages = job
        try:
            result = render_document(
                document, context, assets=assets, tenant_css=tenant_css, max_pages=max_pages
            )
            reply: _Reply = ("ok", result, resident_bytes())
        except Exception as exc:  # job boundary: the engine turns it into a PDFError
            text = str(exc) if isinstance(exc, PDFError) else f"{type(exc).__name__}: {exc}"
            reply = ("error", text, resident_bytes())
        conn.send(reply)


class _Worker:
    """One render process and our end of its pipe. It runs one job at a time, so the engine
    always knows which process holds which render, and can kill exactly that one."""

    def __init__(self, parent: int) -> None:
        ours, theirs = _SPAWN.Pipe()
        # spawn: the worker inherits none of the engine's threads, sockets or connections.
        self.process = _SPAWN.Process(
            target=_serve, args=(theirs, parent), name="dunmail-pdf", daemon=True
        )
        self.process.start()
        theirs.close()  # only the child holds that end now: its death is our EOF
        self.conn = ours
        self.pid: int = self.process.pid or 0
        self.ready = False
        self.rss = 0

    def wait_ready(self) -> None:
        """Block until the worker has warmed up (fonts, templates: about a second)."""
        if not self.ready:
            _, self.pid, self.rss = self.conn.recv()
            self.ready = True

    def call(self, job: _Job) -> _Reply:
        """Send one job and block for its reply (in a thread: the event loop never waits)."""
        self.conn.send(job)
        reply: _Reply = self.conn.recv()
        self.rss = reply[2]
        return reply

    def kill(self) -> None:
        """SIGKILL: WeasyPrint cannot be interrupted inside a render, a process can."""
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to leave, and make sure it did."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


_SPAWN = get_context("spawn")


class PDFRenderer:
    """Renders PDFs off the event loop, in warm worker processes; equal input renders once.

    ``workers`` processes (default: one per CPU) are started with the spawn method and each
    renders one document at a time; each builds its fonts and templates once (:func:`warm`).
    ``workers=0`` renders in a thread of this process instead (tests, tools; there the time
    budget cannot be enforced). Results are kept in a small LRU keyed by :func:`render_key`,
    and concurrent requests for the same key share one render.

    Limits, so that one document cannot starve the others (bench/fairness.py measures them):

    * ``render_seconds``: a render still running after this long has its worker killed
      (SIGKILL; a fresh one replaces it) and fails with a :class:`PDFError` saying so;
    * ``max_pages``: a document laid out to more pages fails before it is written;
    * ``max_worker_mb``: a worker whose resident memory grew past this after a render is
      retired and replaced, so one large document does not leave a process holding it.

    A document that failed so (or any other way) fails again at once for ``failure_seconds``:
    each of its emails, each pass and each download does not burn another worker for it.
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        cache_size: int = 64,
        render_seconds: float | None = 60.0,
        max_pages: int | None = 50,
        max_worker_mb: int | None = 512,
        failure_seconds: float = 3600.0,
    ) -> None:
        count = (os.cpu_count() or 1) if workers is None else workers
        if count < 0:
            raise ValueError("workers must be 0 (in this process) or more")
        self.workers = count
        self.render_seconds = render_seconds
        self.max_pages = max_pages
        self.max_worker_mb = max_worker_mb
        self._failure_seconds = failure_seconds
        self._pool: list[_Worker] = []  # every live worker, busy or idle
        self._idle: list[_Worker] = []
        self._freed = asyncio.Condition()
        self._cache: OrderedDict[str, RenderedPDF] = OrderedDict()
        self._failed: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[str, asyncio.Future[RenderedPDF]] = {}
        self._closed = False

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (bench/fairness.py reads their memory)."""
        return sorted(w.pid for w in self._pool)

    async def start(self) -> list[int]:
        """Start and warm every worker now, so that the first renders do not wait for it.

        Returns the process ids that answered (one per worker; none without a pool).
        """
        if self.workers == 0:
            await asyncio.to_thread(warm)
            return []
        while len(self._pool) < self.workers:
            self._idle.append(self._spawn())
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in self._pool))
        return self.worker_pids()

    async def render(
        self,
        document: str,
        context: Mapping[str, Any],
        *,
        assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
        tenant_css: str | None = None,
    ) -> RenderedPDF:
        """The PDF of ``document`` for ``context``: from the cache, or rendered by a worker."""
        if self._closed:
            raise PDFError("the PDF renderer is closed")
        assets = dict(assets or {})
        key = render_key(document, context, assets=assets, tenant_css=tenant_css)
        if (hit := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            return hit
        if (failed := self._failed.get(key)) is not None:
            if time.monotonic() < failed[0]:
                raise PDFError(failed[1])
            del self._failed[key]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                self._render(key, document, dict(context), assets, tenant_css)
            )
            self._pending[key] = pending
        return await asyncio.shield(pending)

    async def _render(
        self,
        key: str,
        document: str,
        context: dict[str, Any],
        assets: dict[str, bytes | tuple[bytes, str]],
        tenant_css: str | None,
    ) -> RenderedPDF:
        try:
            if self.workers == 0:
                result = await asyncio.to_thread(
                    partial(
                        render_document,
                        document,
                        context,
                        assets=assets,
                        tenant_css=tenant_css,
                        max_pages=self.max_pages,
                    )
                )
            else:
                result = await self._in_worker(document, (document, context, assets, tenant_css))
        except PDFError as exc:
            self._failed[key] = (time.monotonic() + self._failure_seconds, str(exc))
            while len(self._failed) > self._cache_size:
                self._failed.popitem(last=False)
            raise
        finally:
            self._pending.pop(key, None)
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    async def _in_worker(
        self,
        document: str,
        job: tuple[str, dict[str, Any], dict[str, bytes | tuple[bytes, str]], str | None],
    ) -> RenderedPDF:
        worker = await self._acquire()
        keep = False
        try:
            try:
                await asyncio.to_thread(worker.wait_ready)  # warming is not the document's time
                call = asyncio.to_thread(worker.call, (*job, self.max_pages))
                status, value, _ = await asyncio.wait_for(call, self.render_seconds)
            except TimeoutError:
                await asyncio.to_thread(worker.kill)
                log.warning(
                    "PDF worker %d killed: %s took longer than %gs",
                    worker.pid,
                    document,
                    self.render_seconds or 0,
                )
                raise PDFError(
                    f"rendering the {document} PDF took longer than {self.render_seconds:g} s "
                    "(the [pdf] render_seconds budget); its worker process was stopped"
                ) from None
            except (EOFError, OSError) as exc:
                # The worker died (out of memory, a crash in a C library); a fresh one replaces it.
                raise PDFError(f"a PDF worker process died while rendering {document}") from exc
            keep = self._fits(worker)
            if status != "ok":
                raise PDFError(str(value))
            result: RenderedPDF = value
            return result
        finally:
            await self._release(worker, keep=keep)

    def _fits(self, worker: _Worker) -> bool:
        limit = self.max_worker_mb
        if limit is None or worker.rss <= limit * 1024 * 1024:
            return True
        log.info(
            "PDF worker %d holds %d MB after a render (limit %d MB); replacing it",
            worker.pid,
            worker.rss // (1024 * 1024),
            limit,
        )
        return False

    def _spawn(self) -> _Worker:
        worker = _Worker(os.getpid())
        self._pool.append(worker)
        return worker

    async def _acquire(self) -> _Worker:
        """An idle live worker, a new one while there are fewer than ``workers``, else wait."""
        async with self._freed:
            while True:
                if self._closed:
                    raise PDFError("the PDF renderer is closed")
                # One killed while idle (the OOM killer) is replaced; no document notices.
                for dead in [w for w in self._idle if not w.process.is_alive()]:
                    self._idle.remove(dead)
                    self._pool.remove(dead)
                    await asyncio.to_thread(dead.stop)
                if self._idle:
                    return self._idle.pop()
                if len(self._pool) < self.workers:
                    return self._spawn()
                await self._freed.wait()

    async def _release(self, worker: _Worker, *, keep: bool) -> None:
        if keep and not self._closed and worker.process.is_alive():
            self._idle.append(worker)
        else:
            if worker in self._pool:
                self._pool.remove(worker)
            await asyncio.to_thread(worker.stop)
        async with self._freed:
            self._freed.notify()

    async def close(self) -> None:
        """Stop the workers; a render still running fails."""
        self._closed = True
        workers, self._pool, self._idle = self._pool, [], []
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
        async with self._freed:
            self._freed.notify_all()
