"""EDGE: invoice, credit note, estimate, receipt and statement PDFs, rendered with WeasyPrint.

A PDF is rendered from one immutable document version (the JSON-safe context snapshotted on the
message): template -> HTML -> WeasyPrint -> bytes, whose SHA-256 the message stores, so the email,
its attachment and the hosted view show the same bytes. This module holds WeasyPrint's
per-process state, the render itself and the worker pool; the steps it puts together live beside
it: :mod:`mailer.content.pdf_html` (context -> HTML, pure), :mod:`mailer.content.pdf_fetch`
(WeasyPrint fetches
nothing it was not handed: the assets registered for one render, the tenant's logo and our fonts)
and :mod:`mailer.content.pdf_fonts` (Dunmail Sans).

Speed. Without Debian's libharfbuzz-subset0, WeasyPrint 70 subsets every embedded font with
fontTools, and fontTools (4.68 here) decompiles a font's whole GSUB/GPOS tables first, to drop them:
that was three quarters of an invoice's render time. So each process builds "Dunmail Sans" once,
a Latin subset of DejaVu Sans with no layout or hinting tables (about 38 KB a weight), and a
document that font covers is written with ``full_fonts``: embedded whole, no fontTools at all.
Other scripts (Arabic, Hebrew, Greek, Cyrillic ...) fall back to the system's DejaVu Sans and
are subset as usual; with libharfbuzz-subset installed everything is subset, in C. Each process
also keeps one FontConfiguration, the parsed stylesheet and the compiled templates, and
:class:`PDFRenderer` keeps warm worker processes. bench/render.py --levers measures each lever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from weasyprint import CSS, HTML
from weasyprint import __version__ as weasyprint_version
from weasyprint.text.fonts import FontConfiguration

from mailer.content.pdf_fetch import ASSET_SCHEME, checked_asset, safe_fetcher
from mailer.content.pdf_fonts import build_fonts, font_face
from mailer.content.pdf_html import DOCUMENTS, PDF_TEMPLATES, PDFError, environment, render_html
from mailer.content.pdf_samples import sample_pdf_context

log = logging.getLogger(__name__)

MAX_TENANT_CSS = 64 * 1024
# The modules whose code decides a PDF's bytes, for render_key (the sample data does not).
_SOURCES = ("pdf.py", "pdf_fetch.py", "pdf_fonts.py", "pdf_html.py")


@dataclass(frozen=True)
class RenderedPDF:
    """One rendered document: the bytes to attach and store, their SHA-256, the page count.

    ``missing_glyphs`` lists characters ("U+FFE5") that no installed font draws, shown as boxes:
    a CJK locale on a machine without a CJK font, say. The PDF is still valid; callers may flag it.
    """

    data: bytes
    sha256: str
    pages: int
    missing_glyphs: tuple[str, ...] = ()


# --- per-process WeasyPrint state ---------------------------------------------------------------


@dataclass(frozen=True)
class _Engine:
    """What every render in this process shares: built once, since building it is the slow part."""

    font_config: Any  # weasyprint FontConfiguration: Pango's font map and its caches
    stylesheet: Any  # weasyprint CSS: pdf.css plus the @font-face rules, parsed once
    covered: frozenset[int]  # code points Dunmail Sans draws; empty if it could not be built
    subset_in_c: bool  # libharfbuzz-subset is installed: subsetting is cheap, always subset


_RENDER_LOCK = threading.Lock()  # Pango and the shared FontConfiguration are not thread-safe


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    font_config = FontConfiguration()
    fonts, covered = build_fonts()
    faces = "".join(font_face(url, weight) for weight, (url, _) in fonts.items())
    stylesheet = CSS(
        string=faces + (PDF_TEMPLATES / "pdf.css").read_text(encoding="utf-8"),
        font_config=font_config,
        url_fetcher=safe_fetcher({url: (data, "font/ttf") for url, data in fonts.values()}),
    )
    return _Engine(font_config, stylesheet, covered, harfbuzz_subset_available())


def harfbuzz_subset_available() -> bool:
    """WeasyPrint subsets in C when Debian's libharfbuzz-subset0 is installed (~1 ms a font)."""
    try:
        from weasyprint.text.ffi import harfbuzz_subset
    except ImportError:  # an internal module: if it moves, assume the slow (fontTools) path
        return False
    return harfbuzz_subset is not None


# --- rendering ----------------------------------------------------------------------------------


def render_standalone_html(
    document: str, context: Mapping[str, Any], *, fonts_dir: Path | None = None
) -> str:
    """The document as one self-contained HTML page: pdf.css inlined and, with ``fonts_dir``,
    Dunmail Sans written there and linked by ``file://`` URL. For looking at a template in a
    browser and for bench/render.py's plain-WeasyPrint baseline, never for the PDFs we send:
    its ``file://`` URLs are exactly what SafeFetcher refuses.
    """
    css = (PDF_TEMPLATES / "pdf.css").read_text(encoding="utf-8")
    if fonts_dir is not None:
        for weight, (url, data) in build_fonts()[0].items():
            path = fonts_dir / url.removeprefix(ASSET_SCHEME)
            path.write_bytes(data)
            css = font_face(path.as_uri(), weight) + css
    return render_html(document, context).replace("</head>", f"<style>\n{css}</style>\n</head>", 1)


def render_pdf(
    document: str,
    context: Mapping[str, Any],
    *,
    assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
    tenant_css: str | None = None,
) -> bytes:
    """The PDF bytes of ``document`` (a key of DOCUMENTS) for ``context``; see render_document."""
    return render_document(document, context, assets=assets, tenant_css=tenant_css).data


def render_document(
    document: str,
    context: Mapping[str, Any],
    *,
    assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
    tenant_css: str | None = None,
    max_pages: int | None = None,
) -> RenderedPDF:
    """Template -> HTML -> WeasyPrint, synchronously, in this process (callers in async code use
    :class:`PDFRenderer`). ``assets`` are the only URLs the document may load; ``tenant_css`` is
    applied after ours, without ``@font-face`` (fonts would outlive the render in the shared
    FontConfiguration and reach another tenant's PDFs) and with every URL in it refused.

    A document laid out to more than ``max_pages`` pages fails with a :class:`PDFError`
    before it is written (writing is a third of the time of a long document).
    """
    if tenant_css is not None and len(tenant_css) > MAX_TENANT_CSS:
        raise PDFError(
            f"tenant CSS is {len(tenant_css):,} characters; the limit is {MAX_TENANT_CSS:,}"
        )
    fetcher = safe_fetcher(assets)
    html = render_html(document, _without_missing_logo(context, assets or {}))
    text = html + (tenant_css or "")
    with _RENDER_LOCK:
        engine = _engine()
        # Without C subsetting, a document our small font covers embeds it whole: no fontTools
        # at all. Any other character (Arabic, emoji ...) pulls in a fallback font, subset.
        full_fonts = not engine.subset_in_c and _covers(engine.covered, text)
        try:
            stylesheets = [engine.stylesheet]
            if tenant_css:
                stylesheets.append(CSS(string=tenant_css, url_fetcher=fetcher))
            page_set = HTML(string=html, url_fetcher=fetcher).render(
                font_config=engine.font_config, stylesheets=stylesheets
            )
            pages = len(page_set.pages)
            if max_pages is not None and pages > max_pages:
                raise PDFError(
                    f"the {document} PDF runs to {pages:,} pages; the limit is {max_pages:,} "
                    "(the [pdf] max_pages setting)"
                )
            data: bytes = page_set.write_pdf(full_fonts=full_fonts)
        except PDFError:
            raise
        except Exception as exc:  # WeasyPrint has no error hierarchy: any failure is its own
            raise PDFError(
                f"WeasyPrint could not render {document}: {type(exc).__name__}: {exc}"
            ) from exc
    missing = _missing_glyphs(page_set)
    if missing:
        log.warning("%s PDF: no installed font draws %s", document, ", ".join(missing[:20]))
    return RenderedPDF(data, hashlib.sha256(data).hexdigest(), len(page_set.pages), missing)


def _missing_glyphs(page_set: Any) -> tuple[str, ...]:
    """Code points WeasyPrint drew as .notdef boxes (``Font.missing``, filled in write_pdf)."""
    fonts = getattr(page_set, "fonts", {}).values()
    points = {point for font in fonts for point in getattr(font, "missing", {})}
    return tuple(f"U+{point:04X}" for point in sorted(points))


def _covers(covered: frozenset[int], text: str) -> bool:
    return bool(covered) and all(ord(char) in covered for char in set(text))


def _without_missing_logo(
    context: Mapping[str, Any], assets: Mapping[str, object]
) -> Mapping[str, Any]:
    """A logo that was not handed in is left out, rather than drawn as a broken image."""
    tenant = context.get("tenant")
    if not isinstance(tenant, Mapping) or not tenant.get("logo_url"):
        return context
    if tenant["logo_url"] in assets:
        return context
    log.info("PDF logo %r was not among the assets; rendering without it", tenant["logo_url"])
    return {**context, "tenant": {**tenant, "logo_url": None}}


def render_key(
    document: str,
    context: Mapping[str, Any],
    *,
    assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
    tenant_css: str | None = None,
) -> str:
    """SHA-256 of everything that decides the PDF: equal keys mean the same document version was
    already rendered, so its stored PDF can be reused. It covers the templates, the modules that
    render (``_SOURCES``) and the WeasyPrint version, so a deploy that changes the output changes
    the key.
    """
    digests = {
        name: hashlib.sha256(checked_asset(name, value)[0]).hexdigest()
        for name, value in (assets or {}).items()
    }
    payload = {
        "document": document,
        "context": context,
        "tenant_css": tenant_css,
        "assets": digests,
        "engine": _fingerprint(),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@lru_cache(maxsize=1)
def _fingerprint() -> str:
    digest = hashlib.sha256(weasyprint_version.encode())
    files = sorted(p for p in PDF_TEMPLATES.rglob("*") if p.is_file())
    code = [Path(__file__).with_name(name) for name in _SOURCES]
    for path in [*code, *files]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def warm() -> None:
    """Build this process's fonts, stylesheet and templates, and render once (Pango's caches)."""
    with _RENDER_LOCK:
        _engine()
    env = environment()
    for document in DOCUMENTS:
        env.get_template(f"{document}.html")
    render_document("invoice", sample_pdf_context("invoice", lines=2))


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
