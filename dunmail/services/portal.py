"""SERVICE: the customer's account page behind a signed View link, and "pay one or several".

A View link's token (``mailer/outbound/links.py``) names one tenant's document and the email it
came in; the customer of that email (or of the invoice, for a preview's link) is whose account
the page shows. The same token grants it, with the same expiry and revocation: nothing here
issues a longer-lived grant. Every query is scoped by the token's tenant *and* that customer, so
a token never shows another customer's invoice, and an invoice id posted back is taken only if
it is one of that customer's open invoices.

Choosing invoices to pay records a :class:`PaymentIntent` (the allocation), queues a
``payment.intent`` webhook to the ERP in the same transaction, and hands off to the tenant's
provider (``dunmail/services/handoff.py``: a signed form, or a Stripe Checkout Session).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import httpx
import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.portal_words import LOCALE_ROOT
from dunmail.services import handoff
from dunmail.services.portal_statements import SentStatement, sent_statements
from dunmail.web.link_service import Opened
from mailer.checkout_config import CheckoutConfig
from mailer.content.formatting import normalise_locale
from mailer.content.i18n import choose_language
from mailer.content.models import StoredPDF
from mailer.db import session_scope
from mailer.ledger.intent_models import PaymentIntent
from mailer.ledger.localtime import customer_zone
from mailer.ledger.models import (
    CreditNote,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    Tenant,
)

log = logging.getLogger(__name__)
RECENT_PAYMENTS = 10
INTENTS_PER_HOUR = 20  # hand-offs per customer: enough for any person, not for a script
MAX_SELECTED = 40  # invoices in one hand-off (Stripe takes up to 100 line items)


@dataclass(frozen=True)
class OpenInvoice:
    """One open invoice of the customer, as the ledger has it now."""

    id: int
    number: str
    currency: str
    total_minor: int
    balance_minor: int
    issued_at: datetime
    due_at: datetime
    pdf_url: str | None  # under the View link's token (portal_documents.py), when stored


@dataclass(frozen=True)
class Credit:
    number: str
    currency: str
    unallocated_minor: int
    issued_at: datetime


@dataclass(frozen=True)
class Paid:
    reference: str  # the receipt number, else the ERP's id
    currency: str
    amount_minor: int
    received_at: datetime
    method: str | None


@dataclass(frozen=True)
class Account:
    """What the account page shows, read in one go for the token's tenant and customer."""

    tenant_name: str
    customer_name: str
    locale: str  # the locale the customer's emails format with
    time_zone: str
    invoices: list[OpenInvoice]
    credits: list[Credit]
    payments: list[Paid]
    can_pay: bool  # the tenant has a checkout hand-off configured
    customer_id: int = 0  # the token's customer (its RF reference; portal_bank.py)
    statements: list[SentStatement] = field(default_factory=list)  # portal_statements.py


class Refusal(StrEnum):
    """Why a selection was not handed off; the page says it in words."""

    NOTHING = "nothing"  # no invoice chosen
    FOREIGN = "foreign"  # an id that is not one of this customer's open invoices
    MIXED = "mixed"  # more than one currency, or not the form's currency
    TOO_MANY = "too_many"
    LIMITED = "limited"  # too many hand-offs this hour
    UNAVAILABLE = "unavailable"  # no checkout configured, or its secret is not set


@dataclass(frozen=True)
class Handoff:
    """Where the browser goes: a form POSTed to ``url`` with ``fields``, or a redirect."""

    selection: handoff.Selection
    url: str
    fields: list[tuple[str, str]]  # empty: a redirect (Stripe's page)
    provider_ref: str | None = None  # the Checkout Session's id


def account_customer(session: Session, opened: Opened) -> Customer | None:
    """The customer a View link belongs to, of the token's tenant; None for any other link."""
    claims, message = opened.claims, opened.message
    if claims.purpose != "view" or opened.blocked:
        return None
    customer_id = message.customer_id if message is not None else None
    if message is None:
        prefix, _, raw = claims.document.partition(":")
        invoice = session.get(Invoice, int(raw)) if prefix == "invoice" and raw.isdigit() else None
        customer_id = (
            invoice.customer_id if invoice and invoice.tenant_id == claims.tenant_id else None
        )
    customer = session.get(Customer, customer_id) if customer_id is not None else None
    return customer if customer is not None and customer.tenant_id == claims.tenant_id else None


def _open_invoices(session: Session, customer: Customer) -> Sequence[Invoice]:
    return session.exec(
        select(Invoice)
        .where(
            Invoice.tenant_id == customer.tenant_id,
            Invoice.customer_id == customer.id,
            Invoice.status == InvoiceStatus.OPEN,
            col(Invoice.balance_minor) > 0,
        )
        .order_by(col(Invoice.due_at), col(Invoice.number))
    ).all()


def read_account(services: Services, opened: Opened) -> Account | None:
    """The account of the link's customer, or None when the link grants no account."""
    claims = opened.claims
    _, config = services.tenants.config(claims.tenant_id)
    with Session(services.engine) as session:
        customer = account_customer(session, opened)
        tenant = session.get(Tenant, claims.tenant_id)
        if customer is None or tenant is None:
            return None
        invoices = _open_invoices(session, customer)
        stored = set(
            session.exec(
                select(StoredPDF.document, StoredPDF.version).where(
                    StoredPDF.tenant_id == claims.tenant_id,
                    col(StoredPDF.document).in_([f"invoice:{i.id}" for i in invoices]),
                )
            ).all()
        )
        credits = _credits(session, customer)
        payments = session.exec(
            select(Payment)
            .where(Payment.tenant_id == customer.tenant_id, Payment.customer_id == customer.id)
            .order_by(col(Payment.received_at).desc(), col(Payment.id).desc())
            .limit(RECENT_PAYMENTS)
        ).all()
        language = choose_language(
            LOCALE_ROOT,
            normalise_locale(customer.chosen_locale or customer.locale, tenant.locale),
            normalise_locale(tenant.locale),
        )
        return Account(
            tenant_name=config.name,
            customer_name=customer.name,
            locale=language.locale,
            time_zone=customer_zone(customer.time_zone, tenant.time_zone),
            invoices=[
                OpenInvoice(
                    id=i.id or 0,
                    number=i.number,
                    currency=i.currency,
                    total_minor=i.total_minor,
                    balance_minor=i.balance_minor,
                    issued_at=i.issued_at,
                    due_at=i.due_at,
                    pdf_url=f"/l/{opened.token}/account/invoices/{i.id}/pdf"
                    if (f"invoice:{i.id}", i.version) in stored
                    else None,
                )
                for i in invoices
            ],
            credits=credits,
            payments=[
                Paid(
                    p.receipt_number or p.external_id,
                    p.currency,
                    p.amount_minor,
                    p.received_at,
                    p.method,
                )
                for p in payments
            ],
            can_pay=config.payments.checkout is not None,
            customer_id=customer.id or 0,
            statements=sent_statements(session, customer),
        )


def _credits(session: Session, customer: Customer) -> list[Credit]:
    used = (
        select(sa.func.coalesce(sa.func.sum(PaymentAllocation.amount_minor), 0))
        .where(PaymentAllocation.credit_note_id == CreditNote.id)
        .scalar_subquery()
    )
    rows = session.exec(
        select(CreditNote, used)
        .where(CreditNote.tenant_id == customer.tenant_id, CreditNote.customer_id == customer.id)
        .order_by(col(CreditNote.issued_at))
    ).all()
    return [
        Credit(note.number, note.currency, note.amount_minor - int(spent), note.issued_at)
        for note, spent in rows
        if note.amount_minor - int(spent) > 0
    ]


def hand_off(
    services: Services,
    opened: Opened,
    *,
    currency: str,
    invoice_ids: Sequence[int],
    all_overdue: bool,
    client: handoff.CheckoutClient,
) -> Handoff | Refusal | None:
    """Record the customer's choice and hand it to the provider; None: no account here.

    ``all_overdue`` takes every overdue invoice in ``currency``; otherwise ``invoice_ids``,
    each of which must be one of this customer's open invoices in ``currency``. Amounts are
    the invoices' open balances as the ledger has them now, never figures from the form.
    """
    claims = opened.claims
    slug, config = services.tenants.config(claims.tenant_id)
    checkout = config.payments.checkout
    secret = os.environ.get(checkout.secret_env, "") if checkout is not None else ""
    now = services.clock.now()
    with session_scope(services.engine) as session:
        customer = account_customer(session, opened)
        if customer is None:
            return None
        if checkout is None or not secret:
            return Refusal.UNAVAILABLE
        chosen = _choose(session, customer, currency, invoice_ids, all_overdue, now)
        if isinstance(chosen, Refusal):
            return chosen
        recent = session.exec(
            select(sa.func.count()).where(
                PaymentIntent.tenant_id == customer.tenant_id,
                PaymentIntent.customer_id == customer.id,
                col(PaymentIntent.created_at) > now - timedelta(hours=1),
            )
        ).one()
        if recent >= INTENTS_PER_HOUR:
            return Refusal.LIMITED
        selection = handoff.Selection(
            tenant=slug,
            customer=customer.external_id,
            currency=currency,
            allocations=tuple(chosen),
            nonce=secrets.token_hex(16),
            expires_at=now + timedelta(minutes=checkout.lifetime_minutes),
        )
        try:
            result = _provider(checkout, selection, secret, client)
        except httpx.HTTPError as exc:
            log.warning("checkout of tenant %s failed: %s", slug, type(exc).__name__)
            return Refusal.UNAVAILABLE
        _record(session, services, customer, selection, checkout.provider, result, now=now)
    return result


def _choose(
    session: Session,
    customer: Customer,
    currency: str,
    invoice_ids: Sequence[int],
    all_overdue: bool,
    now: datetime,
) -> list[handoff.Allocation] | Refusal:
    mine = {i.id: i for i in _open_invoices(session, customer)}
    if all_overdue:
        picked = [i for i in mine.values() if i.currency == currency and i.due_at < now]
    else:
        if any(i not in mine for i in invoice_ids):
            return Refusal.FOREIGN
        picked = [mine[i] for i in dict.fromkeys(invoice_ids)]
    if not picked:
        return Refusal.NOTHING
    if any(i.currency != currency for i in picked):
        return Refusal.MIXED
    if len(picked) > MAX_SELECTED:
        return Refusal.TOO_MANY
    return [handoff.Allocation(i.id or 0, i.number, i.balance_minor) for i in picked]


def _provider(
    checkout: CheckoutConfig,
    selection: handoff.Selection,
    secret: str,
    client: handoff.CheckoutClient,
) -> Handoff:
    if checkout.provider == "form":
        return Handoff(selection, checkout.url or "", handoff.form_fields(selection, secret))
    params = handoff.stripe_params(
        selection, success_url=checkout.success_url or "", cancel_url=checkout.cancel_url or ""
    )
    made = client.create_session(
        params, api=checkout.stripe_api, secret=secret, idempotency_key=selection.nonce
    )
    return Handoff(selection, made.url, [], provider_ref=made.id)


def _record(
    session: Session,
    services: Services,
    customer: Customer,
    selection: handoff.Selection,
    provider: str,
    result: Handoff,
    *,
    now: datetime,
) -> None:
    allocations = [
        {"invoice_id": a.invoice_id, "number": a.number, "amount_minor": a.amount_minor}
        for a in selection.allocations
    ]
    ref = result.provider_ref
    session.add(
        PaymentIntent(
            tenant_id=customer.tenant_id,
            customer_id=customer.id or 0,
            nonce=selection.nonce,
            provider=provider,
            currency=selection.currency,
            total_minor=selection.total_minor,
            allocations=allocations,
            provider_ref=ref,
            created_at=now,
            expires_at=selection.expires_at,
        )
    )
    data = {
        "intent": selection.nonce,
        "provider": provider,
        "provider_ref": ref,
        "customer": customer.external_id,
        "currency": selection.currency,
        "total_minor": selection.total_minor,
        "allocations": [
            {"number": a["number"], "amount_minor": a["amount_minor"]} for a in allocations
        ],
        "expires_at": selection.expires_at.isoformat(),
    }
    services.webhooks.emit(
        session, tenant_id=customer.tenant_id, event="payment.intent", data=data, now=now
    )
