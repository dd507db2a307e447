"""SERVICE: the PDF of one document version: read from the store, or rendered once and stored.

An unchanged document version is rendered once and its bytes reused by every email about it
(a new invoice and each of its reminders), so the attachment, the message's recorded SHA-256
and the hosted download are the same bytes. Rendering happens in
:class:`~mailer.content.pdf_pool.PDFRenderer`'s
worker processes; the database work runs in a thread: nothing here blocks the event loop.

Fairness. A render is a job of its own, which renders and stores even when nobody waits for
it any more. The delivery pass waits for it at most ``pass_wait`` seconds (:meth:`for_passes`),
then raises :class:`~mailer.errors.PDFPending`: the outbox looks at that email again at a
later pass, which finds the PDF stored. So a slow document never holds the pass, and with it
every other tenant's mail. One tenant renders at most ``tenant_slots`` documents at once, so
the other workers stay free for the other tenants.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer.clock import Clock
from mailer.content.models import StoredPDF
from mailer.content.pdf import RenderedPDF, render_key
from mailer.content.pdf_html import DOCUMENTS, pdf_language
from mailer.db import session_scope
from mailer.errors import PDFPending, TemplateError

log = logging.getLogger(__name__)

# Branding keys the PDF templates read; an email's context may lack them (StrictUndefined).
_TENANT_DEFAULTS: dict[str, Any] = {
    "logo_url": None,
    "brand_color": None,
    "address": [],
    "footer": None,
}


class PDFRendering(Protocol):
    """What renders a PDF off the event loop: :class:`mailer.content.pdf_pool.PDFRenderer`."""

    async def render(
        self,
        document: str,
        context: Mapping[str, Any],
        *,
        assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
        tenant_css: str | None = None,
    ) -> RenderedPDF: ...


def build_pdf_context(pdf: str, context: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """PURE: the PDF's context and tenant CSS, taken from an email's context.

    Only what the PDF shows is kept, so a reminder (with its ``days_overdue`` and ``links``)
    and the new-invoice email for the same version have the same render key and share a PDF.
    The locale and the tenant's fallback are kept: the PDF speaks its email's language.
    """
    key = DOCUMENTS.get(pdf)
    if key is None or key not in context:
        raise TemplateError(f"no {pdf} PDF: the email's context has no {key or pdf!r}")
    tenant = dict(context.get("tenant") or {})
    css = tenant.pop("css", None)
    pdf_context = {
        # The email's locale (mailer.content.i18n.choose_language): a customer whose language
        # has no catalog reads the tenant's language, its numbers and dates too, as the email.
        "locale": pdf_language(context).locale,
        "tenant": {**_TENANT_DEFAULTS, **tenant},
        "customer": context.get("customer", {}),
        key: context[key],
    }
    if context.get("fallback_locale"):  # the tenant's language: the email's when it is the PDF's
        pdf_context["fallback_locale"] = context["fallback_locale"]
    if "time_zone" in context:  # a context queued before contexts had one prints UTC days
        pdf_context["time_zone"] = context["time_zone"]
    if pdf == "invoice" and context.get("bank_transfer"):  # mailer/content/bank_transfer.py
        pdf_context["bank_transfer"] = context["bank_transfer"]
    return pdf_context, css if isinstance(css, str) and css else None


class PDFStore:
    """Rendered PDFs in the database, one row per (tenant, document, version, render key)."""

    def __init__(
        self,
        engine: Engine,
        *,
        renderer: PDFRendering,
        clock: Clock,
        tenant_slots: int | None = None,
    ) -> None:
        """``tenant_slots``: how many renders one tenant may have running at once (None: no
        limit); the rest of its documents wait their turn here, not in the workers' queue."""
        self._engine = engine
        self._renderer = renderer
        self._clock = clock
        self._slots = tenant_slots
        self._tenants: dict[int, asyncio.Semaphore] = {}
        self._jobs: dict[tuple[int, str, int, str], asyncio.Task[StoredPDF]] = {}
        self.pass_wait: float | None = None  # None: wait for the PDF however long it takes

    def for_passes(self, wait: float | None) -> PDFStore:
        """This store (the same jobs and slots) for the delivery pass: it waits at most
        ``wait`` seconds for a PDF, then raises :class:`PDFPending` while the render goes on."""
        other = copy.copy(self)
        other.pass_wait = wait
        return other

    async def fetch_pdf(
        self,
        *,
        tenant_id: int,
        document: str,
        version: int,
        pdf: str,
        context: Mapping[str, Any],
        sha256: str | None = None,
    ) -> StoredPDF:
        """The stored PDF of ``document`` at ``version``; rendered and stored on first use.

        ``pdf`` is the template (``"invoice"``) and ``context`` the email's context snapshot.
        ``sha256`` is what an earlier attempt of the same message sent: a retry after a deploy
        that changed the templates sends those bytes again rather than a fresh render.
        """
        if sha256 is not None:
            sent = await asyncio.to_thread(self._find_sent, tenant_id, document, version, sha256)
            if sent is not None:
                return sent
        pdf_context, css = build_pdf_context(pdf, context)
        key = render_key(pdf, pdf_context, tenant_css=css)
        found = await asyncio.to_thread(self._find, tenant_id, document, version, key)
        if found is not None:
            return found
        job_key = (tenant_id, document, version, key)
        job = self._jobs.get(job_key)
        ongoing = job is not None
        if job is None:
            job = asyncio.create_task(
                self._render(tenant_id, document, version, pdf, key, pdf_context, css)
            )
            self._jobs[job_key] = job
            job.add_done_callback(lambda _: self._jobs.pop(job_key, None))
        if self.pass_wait is None:
            return await asyncio.shield(job)
        # A render an earlier pass started is not waited for again: the pass moves on.
        done, _ = await asyncio.wait({job}, timeout=0 if ongoing else self.pass_wait)
        if job in done:
            return job.result()
        log.info(
            "PDF of %s v%d is still rendering; its email goes at a later pass", document, version
        )
        raise PDFPending(
            f"the PDF of {document} v{version} is still rendering; the email waits for it",
            retry_after=max(self.pass_wait, 1.0),
        )

    async def _render(
        self,
        tenant_id: int,
        document: str,
        version: int,
        pdf: str,
        key: str,
        pdf_context: dict[str, Any],
        css: str | None,
    ) -> StoredPDF:
        """Render (in one of the tenant's slots) and store: runs to the end, awaited or not."""
        slots = self._slots
        if slots is None:
            rendered = await self._renderer.render(pdf, pdf_context, tenant_css=css)
        else:
            slot = self._tenants.setdefault(tenant_id, asyncio.Semaphore(slots))
            async with slot:
                rendered = await self._renderer.render(pdf, pdf_context, tenant_css=css)
        row = StoredPDF(
            tenant_id=tenant_id,
            document=document,
            version=version,
            render_key=key,
            sha256=rendered.sha256,
            pages=rendered.pages,
            data=rendered.data,
            created_at=self._clock.now(),
        )
        return await asyncio.to_thread(self._store, row)

    def _find(self, tenant_id: int, document: str, version: int, key: str) -> StoredPDF | None:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(StoredPDF).where(
                StoredPDF.tenant_id == tenant_id,
                StoredPDF.document == document,
                StoredPDF.version == version,
                StoredPDF.render_key == key,
            )
            return session.exec(query).first()

    def _find_sent(
        self, tenant_id: int, document: str, version: int, sha256: str
    ) -> StoredPDF | None:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(StoredPDF).where(
                StoredPDF.tenant_id == tenant_id,
                StoredPDF.document == document,
                StoredPDF.version == version,
                StoredPDF.sha256 == sha256,
            )
            return session.exec(query).first()

    def _store(self, row: StoredPDF) -> StoredPDF:
        """Insert ``row`` in its own short transaction; if another worker stored the same PDF
        first (the unique constraint), return theirs, so every email carries one set of bytes."""
        try:
            with session_scope(self._engine) as session:
                session.add(row)
        except IntegrityError:
            found = self._find(row.tenant_id, row.document, row.version, row.render_key)
            if found is None:
                raise
            log.info(
                "PDF of %s v%d was stored concurrently; using that one", row.document, row.version
            )
            return found
        return row
