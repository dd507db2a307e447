"""SERVICE: a message's stored snapshot -> the signed bytes a transport sends.

Rendering, the PDF attachment (or the download link that replaces one too large to attach),
composition and DKIM signing, in the one order every path uses: the outbox for each delivery
attempt, ``dunmail preview`` for an email that is never sent. The two cannot drift apart,
so a preview is the email the customer would get.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from mailer.address import make_address
from mailer.content.attachment import PDFTarget, plan_pdf, with_download_notice
from mailer.content.kinds import KINDS
from mailer.content.pdf_html import PDFError
from mailer.content.render import Renderer
from mailer.outbound.assemble_invoices import (
    INVOICE_PDFS,
    SIGNATURE_RESERVE,
    InvoicePDF,
    link_entries,
    listed_invoices,
    pdf_context,
    plan_invoice_attachments,
    rendering_failed,
)
from mailer.outbound.compose import Attachment, Draft, Envelope, Rendered
from mailer.outbound.links import DownloadLinks, LinkMinter
from mailer.outbound.mime import compose

log = logging.getLogger(__name__)


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...


class PDFFile(Protocol):
    """A stored PDF: its bytes and their SHA-256 (:class:`mailer.content.models.StoredPDF`)."""

    @property
    def data(self) -> bytes: ...

    @property
    def sha256(self) -> str: ...


class PDFSource(Protocol):
    """Where the PDF of a document version comes from
    (:class:`mailer.content.pdfstore.PDFStore`)."""

    async def fetch_pdf(
        self,
        *,
        tenant_id: int,
        document: str,
        version: int,
        pdf: str,
        context: Mapping[str, Any],
        sha256: str | None = None,
    ) -> PDFFile: ...


class Snapshot(Protocol):
    """What is stored of a message and needed to build it (``mailer.outbound.requests.Claimed``)."""

    @property
    def uid(self) -> str: ...
    @property
    def tenant_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def context(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def recipients(self) -> tuple[str, ...]: ...
    @property
    def to(self) -> tuple[str, ...]: ...
    @property
    def cc(self) -> tuple[str, ...]: ...
    @property
    def invoice_id(self) -> int | None: ...
    @property
    def document_version(self) -> int | None: ...
    @property
    def pdf_sha256(self) -> str | None: ...


@dataclass(frozen=True)
class Sender:
    """How one tenant's mail leaves: the domain of its Message-IDs, its key, its size limit."""

    message_id_domain: str
    signer: Signer
    # The endpoint's size limit (SMTPEndpoint.max_message_bytes): a PDF that would push the
    # message over it is linked instead of attached.
    max_message_bytes: int | None = None


@dataclass(frozen=True)
class Assembled:
    """The signed message, and the SHA-256 of the PDF it carries or links to (if any)."""

    data: bytes
    pdf_sha256: str | None = None
    pdf_filename: str | None = None
    pdf_linked: bool = False  # too large: the body says where to download it instead
    # Why the kind's PDF is not in it (over the page limit or the render time budget): the
    # email went without it, its View link shows the document; the outbox records this text.
    pdf_note: str | None = None


def link_document(snapshot: Snapshot) -> tuple[str, int]:
    """The document (and version) a message's links name: its PDF's document when the kind has
    one (so a download serves exactly that file), else its invoice, else the message itself."""
    target = plan_pdf(
        snapshot.kind,
        snapshot.context,
        invoice_id=snapshot.invoice_id,
        version=snapshot.document_version,
    )
    if target is not None:
        return target.document, target.version
    if snapshot.invoice_id is not None:
        return f"invoice:{snapshot.invoice_id}", snapshot.document_version or 0
    return f"message:{snapshot.uid}", snapshot.document_version or 0


class Assembler:
    """Builds messages for every tenant; one instance per outbox (or preview)."""

    def __init__(
        self,
        renderer: Renderer,
        *,
        pdfs: PDFSource | None = None,
        attach_pdf: Callable[[int, str], bool] | None = None,
        download_links: DownloadLinks | None = None,
        overrides: Callable[[int, str], Mapping[str, str]] | None = None,
        links: LinkMinter | None = None,
        link_purposes: Callable[[int], Collection[str]] | None = None,
    ) -> None:
        """``pdfs`` turns on PDF attachments: every kind with a PDF (``KINDS[kind].pdf``) gets
        one, unless ``attach_pdf(tenant_id, kind)`` says no. ``download_links`` makes the link
        an email carries instead when the PDF would exceed the endpoint's size limit.

        ``overrides(tenant_id, kind)`` gives the tenant's own templates (part -> source,
        :func:`mailer.content.overrides.stored_overrides`); it is asked once per tenant and kind
        until
        :meth:`forget_overrides`, in a worker thread.

        ``links`` signs the kind's buttons (View, Pay, ...) into the email; ``link_purposes``
        says which a tenant offers (no Pay button without a payment page to send people to).
        """
        if pdfs is not None and download_links is None:
            raise ValueError("PDF attachments need download_links, for PDFs too large to attach")
        self.renderer = renderer
        self._pdfs = pdfs
        self._attach_pdf = attach_pdf
        self._links = download_links
        self._overrides = overrides
        self._override_cache: dict[tuple[int, str], Mapping[str, str]] = {}
        self._minter = links
        self._link_purposes = link_purposes
        self._links_name_message = True

    def previewing(self) -> Assembler:
        """This assembler for a preview: its links name no email (none is stored under a
        preview's uid), so they open the document as the ledger has it instead of a 404."""
        other = copy.copy(self)
        other._links_name_message = False
        return other

    def with_pdfs(self, pdfs: PDFSource | None) -> Assembler:
        """This assembler with another PDF source (None: no PDFs), e.g. one that stores nothing.

        Its kinds attach their PDF unless the tenant's ``attach_pdf`` switch says no.
        """
        other = copy.copy(self)
        other._pdfs = pdfs
        if pdfs is not None and other._links is None:
            raise ValueError("PDF attachments need download_links, for PDFs too large to attach")
        return other

    def forget_overrides(self) -> None:
        """Read tenants' templates afresh: a template saved since applies from now on."""
        self._override_cache = {}

    def pdf_target(self, snapshot: Snapshot) -> PDFTarget | None:
        """Which PDF ``snapshot`` carries, or None: none for its kind, or switched off."""
        if self._pdfs is None:
            return None
        if self._attach_pdf is not None and not self._attach_pdf(snapshot.tenant_id, snapshot.kind):
            return None
        return plan_pdf(
            snapshot.kind,
            snapshot.context,
            invoice_id=snapshot.invoice_id,
            version=snapshot.document_version,
        )

    async def assemble(
        self,
        snapshot: Snapshot,
        sender: Sender,
        envelope: Envelope,
        *,
        now: datetime,
        link_pdf: bool = False,
    ) -> Assembled:
        """Render, attach, compose and DKIM-sign one message.

        Rendering and signing run on the event loop's thread. Signing costs about 0.4 ms (the
        RSA step runs in OpenSSL). Handing work to a thread does not pay: measured in
        bench/send.py, ``asyncio.to_thread`` for the whole signature made the pipeline 35 %
        slower, and (2026-12-04, cryptography 50, which signs with the GIL released) handing
        only the RSA step to the executor made one process 6 % slower (517 vs 548 msg/s) and
        two processes 30 % slower (609 vs 864 msg/s): the hand-off and the GIL's return cost
        what the step saves, and with one process per CPU no core is idle anyway.

        A PDF that would take the message over the endpoint's ``max_message_bytes`` is not
        attached: the email says where to download it instead. Never a silent drop, and
        never a message the server is bound to refuse.

        ``link_pdf`` links the PDF whatever its size: the server refused the message with it
        attached as too big (a limit below our budget), so the outbox sends this version.
        """
        try:
            pdf = await self._fetch_pdf(snapshot)
            note = None
        except PDFError as exc:
            # Nothing lost: the email still goes, on time, and its View link shows the document.
            note = f"PDF not attached: {exc}"
            log.warning("message %s: %s", snapshot.uid, note)
            pdf = None
        overrides = await self._tenant_overrides(snapshot)
        context = self.with_links(snapshot)
        rendered = self.renderer.render(snapshot.kind, context, overrides=overrides)
        draft = Draft(
            uid=snapshot.uid,
            message_id_domain=sender.message_id_domain,
            date=snapshot.created_at,
            # Every customer address, owed or not, so a retry is the same bytes; the cc copies
            # too, and never a bcc (mailer/outbound/copies.py).
            to=[make_address(a) for a in snapshot.to or snapshot.recipients],
            envelope=envelope,
            cc=[make_address(a) for a in snapshot.cc],
        )
        if snapshot.context.get(INVOICE_PDFS):
            rendered, draft = await self._with_invoices(snapshot, rendered, draft, pdf, sender)
        if pdf is None:
            signed = sender.signer.sign(compose(rendered, draft))
            return Assembled(signed, pdf_note=note)
        target, file = pdf
        links = self._links
        chosen = snapshot.context.get("pdf_link_only") is True  # the customer's preference
        if (not link_pdf and not chosen) or links is None:
            attachment = Attachment(filename=target.filename, content=file.data)
            attached = replace(draft, attachments=[attachment, *draft.attachments])
            signed = sender.signer.sign(compose(rendered, attached))
            limit = sender.max_message_bytes
            if limit is None or len(signed) <= limit or links is None:
                return Assembled(signed, file.sha256, target.filename)
            log.info(
                "message %s: its PDF would make it %d bytes (limit %d); linking it instead",
                snapshot.uid,
                len(signed),
                limit,
            )
        url = links.url(snapshot.tenant_id, target.document, target.version, now=now)
        text, html = self.renderer.snippet(
            "pdf_link" if chosen else "download_notice",
            snapshot.context,
            url=url,
            filename=target.filename,
        )
        linked = with_download_notice(rendered, text=text, html=html)
        data = sender.signer.sign(compose(linked, draft))
        return Assembled(data, file.sha256, target.filename, pdf_linked=True)

    def with_links(self, snapshot: Snapshot) -> dict[str, Any]:
        """The snapshot's context with its buttons' links signed in (unchanged without a
        minter): each names the tenant, the document and version, the purpose and this email."""
        spec = KINDS.get(snapshot.kind)
        if self._minter is None or spec is None or not spec.buttons:
            return snapshot.context
        offered = self._link_purposes(snapshot.tenant_id) if self._link_purposes else None
        buttons = [b for b in spec.buttons if offered is None or b in offered]
        document, version = link_document(snapshot)
        links = self._minter.links(
            buttons,
            tenant_id=snapshot.tenant_id,
            message=snapshot.uid if self._links_name_message else None,
            document=document,
            version=version,
            context=snapshot.context,
            created_at=snapshot.created_at,
        )
        return {**snapshot.context, "links": {b: links.get(b) for b in spec.buttons}}

    async def _tenant_overrides(self, snapshot: Snapshot) -> Mapping[str, str] | None:
        """The tenant's templates for this kind, read once (and off the loop)."""
        if self._overrides is None:
            return None
        key = (snapshot.tenant_id, snapshot.kind)
        found = self._override_cache.get(key)
        if found is None:
            found = await asyncio.to_thread(self._overrides, *key)
            self._override_cache[key] = found
        return found

    async def _with_invoices(
        self,
        snapshot: Snapshot,
        rendered: Rendered,
        draft: Draft,
        own: tuple[PDFTarget, PDFFile] | None,
        sender: Sender,
    ) -> tuple[Rendered, Draft]:
        """A statement with its open invoices' PDFs attached within the size budget, and the
        rest listed with their links (mailer/outbound/assemble_invoices.py). Without a PDF
        source (a preview that renders none) or a link minter, the email goes as it is."""
        listed = listed_invoices(snapshot.context)
        if self._pdfs is None or self._minter is None or not listed:
            return rendered, draft
        invoices = []
        for invoice in listed:
            try:
                stored = await self._pdfs.fetch_pdf(
                    tenant_id=snapshot.tenant_id,
                    document=invoice.document,
                    version=invoice.version,
                    pdf="invoice",
                    context=pdf_context(snapshot.context, invoice),
                )
                invoices.append(replace(invoice, data=stored.data))
            except PDFError as exc:
                invoices.append(rendering_failed(invoice, exc, snapshot.uid))
        mine = [Attachment(own[0].filename, own[1].data)] if own is not None else []
        base = len(compose(rendered, replace(draft, attachments=mine)))
        limit = sender.max_message_bytes
        if snapshot.context.get("pdf_link_only") is True:  # the customer's choice: links only
            attached, linked = list[InvoicePDF](), list(invoices)
        else:
            attached, linked = plan_invoice_attachments(base, invoices, limit=limit)
        while True:
            text = rendered
            if linked:
                entries = link_entries(
                    linked,
                    minter=self._minter,
                    tenant_id=snapshot.tenant_id,
                    message=snapshot.uid if self._links_name_message else None,
                    created_at=snapshot.created_at,
                )
                notice = self.renderer.snippet("invoice_links", snapshot.context, invoices=entries)
                text = with_download_notice(rendered, text=notice[0], html=notice[1])
            files = [Attachment(i.filename, i.data) for i in attached if i.data is not None]
            whole = len(compose(text, replace(draft, attachments=[*mine, *files])))
            if limit is None or not attached or whole + SIGNATURE_RESERVE <= limit:
                return text, replace(draft, attachments=files)
            linked.insert(0, attached.pop())  # the notice made it too big: one fewer attached

    async def _fetch_pdf(self, snapshot: Snapshot) -> tuple[PDFTarget, PDFFile] | None:
        """The PDF this message carries, or None: from the store, else rendered in the pool."""
        target = self.pdf_target(snapshot)
        if target is None or self._pdfs is None:
            return None
        stored = await self._pdfs.fetch_pdf(
            tenant_id=snapshot.tenant_id,
            document=target.document,
            version=target.version,
            pdf=target.pdf,
            context=snapshot.context,
            sha256=snapshot.pdf_sha256,
        )
        return target, stored
