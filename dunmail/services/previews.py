"""An email exactly as it would be sent (headers, parts, PDF, DKIM), neither sent nor recorded.

The context is built by ``Triggers.invoice_email`` (scheduler/triggers.py), as the queue stores
it; the message by :class:`mailer.outbound.assemble.Assembler` with the tenant's sending profile,
as the dispatcher sends it.
Only the database writes and the transport are left out (the PDF is rendered here, not taken
from or put in the store), so ``dunmail preview`` can be run against a live ledger at any time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailer.clock import Clock
from mailer.content.formatting import normalise_locale
from mailer.content.i18n import fallback_note
from mailer.content.kinds import INVOICE_EMAILS, KINDS
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.errors import MailerError
from mailer.outbound.assemble import Assembler, PDFFile
from mailer.outbound.dispatch import Dispatcher
from mailer.outbound.requests import Claimed
from mailer.tenant_config import TenantConfig
from mailer.tenants import Tenants
from scheduler.triggers import Triggers

# The kinds a preview can build from an invoice in the ledger; any kind works with a sample.
SAMPLE_RECIPIENT = "customer@example.com"


@dataclass(frozen=True)
class Preview:
    """A composed, signed message and what went into it."""

    kind: str
    recipients: tuple[str, ...]
    data: bytes  # RFC 5322 bytes, DKIM-signed, as the transport would receive them
    pdf: str | None  # the attached PDF's file name, if any
    pdf_skipped: str | None = None  # why a kind with a PDF has none attached
    enabled: bool = True  # False: the tenant's config switches this kind off
    language: str = "en"  # the language it is rendered in (the outbox records the same)
    language_note: str | None = None  # set when that is not the language asked for


@dataclass(frozen=True)
class _Source:
    context: dict[str, Any]
    recipients: tuple[str, ...]
    invoice_id: int | None = None  # as the outbox row would have it: links name invoice:<id>
    version: int | None = None


class Previews:
    """Builds previews from the parts that send for real, minus the database writes."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        tenants: Tenants,
        triggers: Triggers,
        dispatcher: Dispatcher,
        renderer: Renderer,
        assembler: Assembler,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._tenants = tenants
        self._triggers = triggers
        self._dispatcher = dispatcher
        self._renderer = renderer
        self._assembler = assembler

    async def build(
        self,
        kind: str,
        *,
        invoice: str | None,
        tenant: str | None,
        locale: str | None = None,
        sample: bool = False,
    ) -> Preview:
        """Render, compose and sign ``kind`` for ``invoice`` (or its sample context) in memory."""
        if kind not in KINDS:
            raise MailerError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
        tenant_id = self._tenants.id(tenant)
        _, config = self._tenants.config(tenant_id)
        if sample:
            source = _sample(kind, config, locale)
        elif invoice is None:
            raise MailerError(f"say which invoice with --invoice, or preview {kind} with --sample")
        elif kind not in INVOICE_EMAILS:
            raise MailerError(
                f"{kind} is not an invoice email ({', '.join(INVOICE_EMAILS)}): "
                "preview it with --sample"
            )
        else:
            source = self._from_ledger(kind, invoice, tenant_id, locale, config)
        profile = self._dispatcher.profile(tenant_id)
        uid = secrets.token_hex(10)  # as Queue.enqueue makes them; nothing is stored under it
        snapshot = Claimed(
            id=0,
            uid=uid,
            tenant_id=tenant_id,
            kind=kind,
            context=source.context,
            created_at=self._clock.now(),
            attempts=0,
            recipients=source.recipients,
            previously_accepted=0,
            invoice_id=source.invoice_id,
            document_version=source.version,
        )
        envelope = profile.identity.envelope(uid)
        language = self._renderer.language_of(source.context)
        asked = locale or source.context.get("locale")
        note = fallback_note(asked if isinstance(asked, str) else None, language)
        assembler = self._assembler.previewing()
        skipped = _no_pdf_reason(assembler, snapshot, config)
        if skipped is None:
            try:
                built = await assembler.with_pdfs(_RenderHere()).assemble(
                    snapshot, profile.sender, envelope, now=snapshot.created_at
                )
                return Preview(
                    kind,
                    source.recipients,
                    built.data,
                    built.pdf_filename,
                    None,
                    config.sends(kind),
                    language,
                    note,
                )
            except _PDFFailed as exc:  # the outbox would fail this message: say why, keep the email
                skipped = str(exc)
        built = await assembler.with_pdfs(None).assemble(
            snapshot, profile.sender, envelope, now=snapshot.created_at
        )
        return Preview(
            kind, source.recipients, built.data, None, skipped, config.sends(kind), language, note
        )

    def _from_ledger(
        self, kind: str, number: str, tenant_id: int, locale: str | None, config: TenantConfig
    ) -> _Source:
        """The context the queue would store for this invoice email, read without writing."""
        with Session(self._engine) as session:  # never committed: a preview records nothing
            email = self._triggers.invoice_email(
                session, tenant_id=tenant_id, number=number, kind=kind, sending=False
            )
        context = email.context
        if locale is not None:
            context["locale"] = normalise_locale(locale, config.locale)
        invoice = email.invoice
        return _Source(context, email.recipients, invoice.id, invoice.version)


def _sample(kind: str, config: TenantConfig, locale: str | None) -> _Source:
    context = sample_context(kind, locale=normalise_locale(locale, config.locale))
    context["fallback_locale"] = normalise_locale(config.locale)
    # The tenant's own name and look, not the sample's: the email this tenant would send.
    branding = {k: v for k, v in config.branding.as_context().items() if v}
    context["tenant"] = {"name": config.name, "email": config.email, **branding}
    return _Source(context, (SAMPLE_RECIPIENT,))


def _no_pdf_reason(assembler: Assembler, snapshot: Claimed, config: TenantConfig) -> str | None:
    """Why ``snapshot`` goes without a PDF, or None when it carries one."""
    kind = snapshot.kind
    if KINDS[kind].pdf is None:
        return None  # nothing to say: the kind has no PDF
    if not config.attaches_pdf(kind):
        return f"attach_pdf is off for {kind}"
    try:
        import mailer.content.pdf  # noqa: F401  (WeasyPrint and its system libraries)
    except (ImportError, OSError) as exc:
        return f"PDFs unavailable: {exc}"
    if assembler.with_pdfs(_RenderHere()).pdf_target(snapshot) is None:
        return f"the {kind} context has no document to print"
    return None


class _PDFFailed(MailerError):
    """The PDF could not be rendered; the preview shows the email without it, and why."""


class _RenderHere:
    """A PDF source that renders in this process and stores nothing (a preview records nothing)."""

    async def fetch_pdf(
        self,
        *,
        tenant_id: int,
        document: str,
        version: int,
        pdf: str,
        context: Mapping[str, Any],
        sha256: str | None = None,
    ) -> PDFFile:
        from mailer.content.pdf import render_document
        from mailer.content.pdfstore import build_pdf_context

        try:
            pdf_context, css = build_pdf_context(pdf, context)
            return await asyncio.to_thread(render_document, pdf, pdf_context, tenant_css=css)
        except MailerError as exc:
            raise _PDFFailed(f"the {pdf} PDF failed: {exc}") from exc
