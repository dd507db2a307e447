"""Customers' links from their emails: ``/l/<token>`` and what each purpose leads to.

* ``view``: the hosted page of the document version the email carried (``hosted.py``);
* ``pay``, ``update_payment``, ``manage``: a 303 to the tenant's configured payment URL (only
  ever built from the config: never an open redirect);
* ``download`` and ``/l/<token>/pdf``: the PDF of that version, the bytes the email attached.

A token that fails its MAC, names another tenant's email, or is malformed is a 404 that says
no more than "not valid". An expired or revoked one is a 410 page offering a fresh link: the
same email is queued again to the customer's contacts on file (never to an address typed on
the page; the form has no fields and the body is never read), at most
``[web] fresh_links_per_day`` times per document in 24 hours. A link revoked by itself may ask
(the new email goes only to the contacts on file); a document whose links were all revoked may
not (its new links would be revoked too). Every open is a ``LinkEvent`` (never the token) shown
in the document's AR inbox thread, and a ``link.clicked`` webhook for views, clicks and
downloads. Tokens never reach a log: uvicorn's access log is redacted below.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from bounce.recovery import (
    _copy as copy_request,
)  # TODO: made public as bounce.recovery.copy_request
from dunmail.app import Services
from dunmail.web import hosted
from dunmail.web.deps import SECURITY_HEADERS, page, services_of
from mailer.attachment import file_stem, plan_pdf
from mailer.db import session_scope
from mailer.errors import LinkInvalid, MailerError, NotFoundError
from mailer.kinds import KINDS
from mailer.ledger import customer_contacts, find_invoice
from mailer.links import PURPOSES, LinkClaims, issue_link, token_hash, verify_link
from mailer.models import Customer, LinkEvent, LinkRevocation, Message, StoredPDF

router = APIRouter()
log = logging.getLogger(__name__)

# Responses about one customer's document: never kept by a shared cache or the browser.
NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "private, no-store"}
CLICKS = ("opened", "redirected", "downloaded")  # what a link.clicked webhook reports
_PAYMENT_URLS = {"pay": "pay_url", "update_payment": "update_payment_url", "manage": "manage_url"}
_AGENT_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Opened:
    """A link whose MAC verified, with the email it came in (detached from its session)."""

    token: str
    claims: LinkClaims
    message: Message | None  # None only for a download link made without one (DownloadLinks)
    revoked: str | None = None  # "token" or "document"

    @property
    def blocked(self) -> bool:
        """Expired or revoked: the document is not shown."""
        return self.claims.expired or self.revoked is not None


class FreshLink(StrEnum):
    """What a request for a fresh link did."""

    SENT = "sent"
    LIMITED = "limited"  # too many in 24 hours
    WITHDRAWN = "withdrawn"  # every link to the document was revoked
    NO_CONTACT = "no_contact"


# -- service -------------------------------------------------------------------------------


def open_link(services: Services, token: str) -> Opened:
    """Verify ``token`` (expired ones too) and find its email and any revocation.

    :class:`LinkInvalid` for a bad MAC, an unknown purpose or tenant, or an email that is not
    the token's tenant's: all of them look the same to the customer.
    """
    if not services.link_keys:
        raise LinkInvalid("no link keys are configured")
    now = services.clock.now()
    claims = verify_link(token, keys=services.link_keys, now=now, allow_expired=True)
    if claims.purpose not in PURPOSES or claims.tenant_id not in services.tenant_ids.values():
        raise LinkInvalid("link names an unknown purpose or tenant")
    with Session(services.engine, expire_on_commit=False) as session:
        message = None
        if claims.message is not None:
            message = session.exec(
                select(Message).where(
                    Message.uid == claims.message, Message.tenant_id == claims.tenant_id
                )
            ).first()
            if message is None:
                raise LinkInvalid("link names no email of its tenant")
        elif claims.purpose != "download":
            raise LinkInvalid("link names no email")
        revoked = session.exec(
            select(LinkRevocation.document).where(
                LinkRevocation.tenant_id == claims.tenant_id,
                sa.or_(
                    col(LinkRevocation.token_hash) == token_hash(token),
                    col(LinkRevocation.document) == claims.document,
                ),
            )
        ).all()
    how = None
    if revoked:
        how = "document" if any(d is not None for d in revoked) else "token"
    return Opened(token=token, claims=claims, message=message, revoked=how)


def record_click(services: Services, opened: Opened, *, action: str, user_agent: str) -> None:
    """Store the open as a :class:`LinkEvent` (and queue its webhook) in its own transaction."""
    with session_scope(services.engine) as session:
        _record(session, services, opened, action=action, user_agent=user_agent)


def _record(
    session: Session, services: Services, opened: Opened, *, action: str, user_agent: str
) -> None:
    now = services.clock.now()
    claims, message = opened.claims, opened.message
    session.add(
        LinkEvent(
            tenant_id=claims.tenant_id,
            message_id=message.id if message is not None else None,
            document=claims.document[:100],
            purpose=claims.purpose,
            action=action,
            at=now,
            user_agent=_CONTROL.sub(" ", user_agent)[:_AGENT_CHARS],
        )
    )
    if action in CLICKS:
        data = {
            "message": message.uid if message is not None else None,
            "document": claims.document,
            "purpose": claims.purpose,
            "action": action,
            "at": now.isoformat(),
        }
        services.webhooks.emit(
            session, tenant_id=claims.tenant_id, event="link.clicked", data=data, now=now
        )


def request_fresh_link(services: Services, opened: Opened, *, user_agent: str) -> FreshLink:
    """Queue the link's email again (same kind, context, document and version) to the
    customer's current contacts, suppression-aware; rate-limited per document."""
    message, claims = opened.message, opened.claims
    if opened.revoked == "document":
        return FreshLink.WITHDRAWN
    if message is None or message.customer_id is None:
        return FreshLink.NO_CONTACT
    now = services.clock.now()
    limit = services.config.web.fresh_links_per_day
    with session_scope(services.engine) as session:
        asked = select(sa.func.count()).where(
            LinkEvent.tenant_id == claims.tenant_id,
            LinkEvent.document == claims.document,
            LinkEvent.action == "refreshed",
        )
        recent = session.exec(asked.where(col(LinkEvent.at) > now - timedelta(days=1))).one()
        if recent >= limit:
            return FreshLink.LIMITED
        customer = session.get(Customer, message.customer_id)
        if customer is None or customer.tenant_id != claims.tenant_id:
            return FreshLink.NO_CONTACT
        contacts = customer_contacts(session, customer, now=now)
        if not contacts:
            return FreshLink.NO_CONTACT
        number = session.exec(asked).one() + 1
        request = copy_request(
            message, [c.email for c in contacts], occasion=f"fresh link {number}", manual=True
        )
        services.outbox.enqueue(session, request, now=now)
        _record(session, services, opened, action="refreshed", user_agent=user_agent)
    return FreshLink.SENT


def revoke_links(
    services: Services,
    *,
    tenant: str | None,
    token: str | None = None,
    invoice: str | None = None,
    reason: str = "",
    by: str,
) -> str:
    """Revoke one link (``token``, or a URL ending in it) or every link to invoice ``invoice``;
    returns what was revoked. Revoking twice is harmless."""
    if (token is None) == (invoice is None):
        raise MailerError("revoke either one link (--token) or an invoice's links (--invoice)")
    now = services.clock.now()
    row = LinkRevocation(reason=reason[:300], created_by=by[:200], created_at=now, tenant_id=0)
    if token is not None:
        token = token.strip().rsplit("/l/", 1)[-1].split("/")[0].split("?")[0]
        claims = verify_link(token, keys=services.link_keys, now=now, allow_expired=True)
        if tenant is not None and services.tenant_id(tenant) != claims.tenant_id:
            raise NotFoundError("that link belongs to another tenant")
        row.tenant_id, row.token_hash = claims.tenant_id, token_hash(token)
        what = f"the {claims.purpose} link to {claims.document}"
    else:
        row.tenant_id = services.tenant_id(tenant)
        with Session(services.engine) as session:
            found = find_invoice(session, tenant_id=row.tenant_id, number=invoice or "")
            row.document = f"invoice:{found.id}"
        what = f"every link to invoice {invoice}"
    with session_scope(services.engine) as session:
        same = (
            col(LinkRevocation.token_hash) == row.token_hash
            if row.token_hash is not None
            else col(LinkRevocation.document) == row.document
        )
        known = session.exec(
            select(LinkRevocation.id).where(LinkRevocation.tenant_id == row.tenant_id, same)
        ).first()
        if known is None:
            session.add(row)
    log.info("revoked %s (tenant %d) by %s", what, row.tenant_id, by)
    return what


async def fetch_link_pdf(services: Services, opened: Opened) -> tuple[bytes, str] | None:
    """The PDF of the link's document version and its file name, or None: the stored bytes
    the email carried, else rendered through the outbox's PDF store."""
    claims, message = opened.claims, opened.message
    if message is None:
        return await run_in_threadpool(_stored_pdf, services, claims)
    target = plan_pdf(
        message.kind,
        message.context,
        invoice_id=message.invoice_id,
        version=message.document_version,
    )
    if target is None or (target.document, target.version) != (claims.document, claims.version):
        return None
    if services.pdf_store is not None:
        stored = await services.pdf_store.fetch_pdf(
            tenant_id=message.tenant_id,
            document=target.document,
            version=target.version,
            pdf=target.pdf,
            context=message.context,
            sha256=message.pdf_sha256,
        )
        return stored.data, target.filename
    found = await run_in_threadpool(_stored_pdf, services, claims, message.pdf_sha256)
    return (found[0], target.filename) if found is not None else None


def _stored_pdf(
    services: Services, claims: LinkClaims, sha256: str | None = None
) -> tuple[bytes, str] | None:
    with Session(services.engine) as session:
        query = select(StoredPDF).where(
            StoredPDF.tenant_id == claims.tenant_id,
            StoredPDF.document == claims.document,
            StoredPDF.version == claims.version,
        )
        if sha256 is not None:
            query = query.where(StoredPDF.sha256 == sha256)
        stored = session.exec(query.order_by(col(StoredPDF.id).desc())).first()
        if stored is None:
            return None
        sent = session.exec(
            select(Message).where(
                Message.tenant_id == claims.tenant_id, Message.pdf_sha256 == stored.sha256
            )
        ).first()
        target = sent and plan_pdf(
            sent.kind, sent.context, invoice_id=sent.invoice_id, version=sent.document_version
        )
        name = target.filename if target else f"{file_stem(claims.document)}.pdf"
        return stored.data, name


# -- pages ---------------------------------------------------------------------------------


def _agent(request: Request) -> str:
    return request.headers.get("user-agent", "")


def _message_page(
    request: Request,
    title: str,
    text: list[str],
    *,
    status: int,
    opened: Opened | None = None,
    form: bool = False,
) -> Response:
    context: dict[str, Any] = {
        "title": title,
        "paragraphs": text,
        "form_action": f"/l/{opened.token}/refresh" if form and opened else None,
        "brand": _branding(request, opened) if opened else None,
        "brand_color": _branding(request, opened).brand_color if opened else hosted.DEFAULT_BRAND,
    }
    response = page(request, "link_message.html", context, status)
    response.headers.update(NO_STORE)
    return response


def _invalid(request: Request) -> Response:
    return _message_page(
        request,
        "This link is not valid",
        ["Please use the link from your email exactly as it was sent, or contact the sender."],
        status=404,
    )


def _branding(request: Request, opened: Opened) -> hosted.Branding:
    services = services_of(request)
    _, config = services.tenant_config(opened.claims.tenant_id)
    context = opened.message.context if opened.message is not None else {}
    branding = hosted.build_branding(context, config.branding.as_context())
    if not branding.name:
        branding = replace(branding, name=config.name)
    return branding


def _gone(request: Request, opened: Opened) -> Response:
    if opened.revoked == "document":
        return _message_page(
            request,
            "This link has been withdrawn",
            ["The sender has withdrawn the links to this document. Please contact them."],
            status=410,
            opened=opened,
        )
    why = "has been revoked" if opened.revoked else "has expired"
    return _message_page(
        request,
        f"This link {why}",
        [
            "We can email you a fresh link. It goes to the contacts we have on file for "
            "your account, not to an address typed here.",
        ],
        status=410,
        opened=opened,
        form=True,
    )


async def _open(request: Request, token: str) -> Opened | Response:
    try:
        return await run_in_threadpool(open_link, services_of(request), token)
    except LinkInvalid:
        return _invalid(request)


@router.get("/l/{token}")
async def follow_link(token: str, request: Request) -> Response:
    """Where every link in an email leads; query parameters are ignored."""
    services = services_of(request)
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if opened.blocked:
        await run_in_threadpool(
            record_click, services, opened, action="refused", user_agent=_agent(request)
        )
        return _gone(request, opened)
    purpose = opened.claims.purpose
    if purpose == "download":
        return await _pdf_response(request, opened)
    if purpose == "view":
        await run_in_threadpool(
            record_click, services, opened, action="opened", user_agent=_agent(request)
        )
        return _document_page(request, opened)
    target = _payment_target(services, opened)
    if target is None:
        await run_in_threadpool(
            record_click, services, opened, action="refused", user_agent=_agent(request)
        )
        return _message_page(
            request,
            "Online payment is not available",
            ["Please use the payment details on your invoice, or contact the sender."],
            status=404,
            opened=opened,
        )
    await run_in_threadpool(
        record_click, services, opened, action="redirected", user_agent=_agent(request)
    )
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


@router.get("/l/{token}/pdf")
async def link_pdf(token: str, request: Request) -> Response:
    """The PDF of a view or download link's document version."""
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if opened.claims.purpose not in ("view", "download"):
        return _invalid(request)
    if opened.blocked:
        return _gone(request, opened)
    return await _pdf_response(request, opened)


@router.post("/l/{token}/refresh")
async def refresh_link(token: str, request: Request) -> Response:
    """Email a fresh link to the contacts on file. The request body is never read."""
    services = services_of(request)
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if not opened.blocked:
        return RedirectResponse(f"/l/{token}", status_code=303, headers=NO_STORE)
    result = await run_in_threadpool(
        request_fresh_link, services, opened, user_agent=_agent(request)
    )
    if result is FreshLink.WITHDRAWN:
        return _gone(request, opened)
    if result is FreshLink.LIMITED:
        text = [
            "We have sent several fresh links for this document today. Please try again "
            "tomorrow, or contact the sender."
        ]
        return _message_page(request, "Too many requests", text, status=429, opened=opened)
    if result is FreshLink.NO_CONTACT:
        text = ["We have no contact on file to send it to. Please contact the sender."]
        return _message_page(
            request, "We could not send a fresh link", text, status=200, opened=opened
        )
    text = ["We have emailed a fresh link to the contacts we have on file for your account."]
    return _message_page(request, "A fresh link is on its way", text, status=200, opened=opened)


def _payment_target(services: Services, opened: Opened) -> str | None:
    claims, message = opened.claims, opened.message
    _, config = services.tenant_config(claims.tenant_id)
    template = getattr(config.payments, _PAYMENT_URLS.get(claims.purpose, ""), None)
    context = message.context if message is not None else {}
    customer = context.get("customer")
    return hosted.payment_target(
        template,
        number=hosted.document_number(context, claims.document),
        document=claims.document,
        customer=str(customer.get("id", "")) if isinstance(customer, dict) else "",
    )


def _document_page(request: Request, opened: Opened) -> Response:
    services = services_of(request)
    message, claims = opened.message, opened.claims
    if message is None:  # open_link lets only download links through without an email
        return _invalid(request)
    _, config = services.tenant_config(claims.tenant_id)
    document = hosted.build_document(
        message.kind, message.context, sent_at=message.created_at, now=services.clock.now()
    )
    pay_url = None
    if config.payments.pay_url and _offers_pay(message.kind):
        pay = issue_link(
            "pay",
            claims.tenant_id,
            claims.document,
            claims.version,
            key=services.link_keys[0],
            expires_at=claims.expires_at,
            message=message.uid,
        )
        pay_url = f"/l/{pay}"
    has_pdf = plan_pdf(message.kind, message.context, invoice_id=message.invoice_id) is not None
    branding = _branding(request, opened)
    customer = message.context.get("customer")
    context = {
        "doc": document,
        "brand": branding,
        "brand_color": branding.brand_color,
        "customer_name": str(customer.get("name", "")) if isinstance(customer, dict) else "",
        "pay_url": pay_url,
        "pdf_url": f"/l/{opened.token}/pdf"
        if has_pdf and (services.pdf_store is not None or message.pdf_sha256)
        else None,
    }
    response = page(request, "link_document.html", context)
    response.headers.update(NO_STORE)
    return response


def _offers_pay(kind: str) -> bool:
    spec = KINDS.get(kind)
    return spec is not None and "pay" in spec.buttons


async def _pdf_response(request: Request, opened: Opened) -> Response:
    services = services_of(request)
    try:
        found = await fetch_link_pdf(services, opened)
    except MailerError:
        log.exception("link PDF of %s v%d failed", opened.claims.document, opened.claims.version)
        found = None
    if found is None:
        return _message_page(
            request,
            "No PDF is available",
            ["There is no PDF of this document to download. Please contact the sender."],
            status=404,
            opened=opened,
        )
    data, filename = found
    await run_in_threadpool(
        record_click, services, opened, action="downloaded", user_agent=_agent(request)
    )
    # file_stem() already removed quotes and separators; the plain name is ASCII for old
    # clients, the RFC 6266 filename* keeps a non-ASCII number intact.
    plain = "".join(c if c.isascii() and c.isprintable() else "_" for c in filename)
    headers = {
        **NO_STORE,
        "Content-Disposition": f'attachment; filename="{plain}"; '
        f"filename*=UTF-8''{quote(filename, safe='')}",
    }
    return Response(data, media_type="application/pdf", headers=headers)


# -- logs ------------------------------------------------------------------------------------

_TOKEN_IN_PATH = re.compile(r"/l/[^/?#\s\"]+")


class RedactLinkTokens(logging.Filter):
    """uvicorn's access log writes every request line, and a link token in a log lets whoever
    reads it open the customer's document: the token becomes ``<token>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub("/l/<token>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


logging.getLogger("uvicorn.access").addFilter(RedactLinkTokens())
