"""SERVICE: the PDF of one document version: read from the store, or rendered once and stored.

An unchanged document version is rendered once and its bytes reused by every email about it
(a new invoice and each of its reminders), so the attachment, the message's recorded SHA-256
and the hosted download are the same bytes. Rendering happens in :class:`~mailer.pdf.PDFRenderer`'s
worker processes; the database work runs in a thread: nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer.clock import Clock
from mailer.db import session_scope
from mailer.errors import TemplateError
from mailer.models import StoredPDF
from mailer.pdf import RenderedPDF, render_key
from mailer.pdf_html import DOCUMENTS

log = logging.getLogger(__name__)

# Branding keys the PDF templates read; an email's context may lack them (StrictUndefined).
_TENANT_DEFAULTS: dict[str, Any] = {
    "logo_url": None,
    "brand_color": None,
    "address": [],
    "footer": None,
}


class PDFRendering(Protocol):
    """What renders a PDF off the event loop: :class:`mailer.pdf.PDFRenderer`."""

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
    """
    key = DOCUMENTS.get(pdf)
    if key is None or key not in context:
        raise TemplateError(f"no {pdf} PDF: the email's context has no {key or pdf!r}")
    tenant = dict(context.get("tenant") or {})
    css = tenant.pop("css", None)
    pdf_context = {
        "locale": context.get("locale", "en"),
        "tenant": {**_TENANT_DEFAULTS, **tenant},
        "customer": context.get("customer", {}),
        key: context[key],
    }
    if "time_zone" in context:  # a context queued before contexts had one prints UTC days
        pdf_context["time_zone"] = context["time_zone"]
    return pdf_context, css if isinstance(css, str) and css else None


class PDFStore:
    """Rendered PDFs in the database, one row per (tenant, document, version, render key)."""

    def __init__(self, engine: Engine, *, renderer: PDFRendering, clock: Clock) -> None:
        self._engine = engine
        self._renderer = renderer
        self._clock = clock

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
