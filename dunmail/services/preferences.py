"""SERVICE: a customer's delivery preferences behind the account page's signed View link.

The customer of a View link (``dunmail/services/portal.py``: ``account_customer``, the same
tenant- and customer-scoped grant as the account page) may choose how they are mailed:

* PDFs attached (as the tenant's templates say) or as a download link only
  (``Customer.pdf_link_only``; ``mailer/content/context.py`` puts it in every email's context
  and ``mailer/outbound/assemble.py`` links instead of attaching);
* the language, among those the tenant has templates for (``Customer.chosen_locale``, which
  stands in for the ERP's ``locale`` until the ERP sends another one);
* their billing contacts: add or change one (``dunmail/services/contact_requests.py``: not
  used until the emailed link is followed), or remove one, never the last.

Every change is a :class:`PreferenceChange` row saying what, who (the customer, through which
email's link) and when; the clerk's customer page lists them (:func:`changes_for_clerk`).
Changes are limited per customer per hour (:data:`CHANGES_PER_HOUR`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from babel.core import Locale
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.portal_words import LOCALE_ROOT
from dunmail.services.contact_notice import queue_change_notice
from dunmail.services.customer_rows import blocks_of
from dunmail.services.portal import account_customer
from dunmail.web.link_service import Opened
from mailer.content.formatting import normalise_locale
from mailer.content.i18n import available_languages, choose_language
from mailer.db import session_scope
from mailer.ledger.contact_changes import erp_listed, standing_changes
from mailer.ledger.holds import touch_customer_invoices
from mailer.ledger.models import Contact, Customer, Tenant
from mailer.ledger.preference_models import (
    ChangeKind,
    ContactRequest,
    PreferenceChange,
    RequestStatus,
)
from mailer.outbound.webhooks import Webhooks

log = logging.getLogger(__name__)
CHANGES_PER_HOUR = 20  # changes per customer: enough for any person, not for a script


class Outcome(StrEnum):
    """What became of a customer's action; the page says it in words."""

    REQUESTED = "requested"  # a confirmation link was emailed to the new address
    CONFIRMED = "confirmed"
    REMOVED = "removed"
    SAVED = "saved"
    UNCHANGED = "unchanged"
    INVALID_ADDRESS = "invalid_address"
    SUPPRESSED = "suppressed"  # we may not mail that address (it bounced, complained, ...)
    ALREADY = "already"  # already one of the customer's contacts
    LAST_CONTACT = "last_contact"
    UNKNOWN_CONTACT = "unknown_contact"
    TOO_MANY_CONTACTS = "too_many_contacts"
    UNKNOWN_LANGUAGE = "unknown_language"
    LIMITED = "limited"
    UNAVAILABLE = "unavailable"  # the tenant does not send confirmation emails
    NOT_VALID = "not_valid"  # a confirmation link that is expired, used or not ours


@dataclass(frozen=True)
class ContactRow:
    email: str
    name: str | None
    blocked: bool  # suppressed: our mail does not reach it


@dataclass(frozen=True)
class PendingRow:
    email: str
    replaces: str | None
    expires_at: datetime


@dataclass(frozen=True)
class Preferences:
    """What the preferences page shows, read for the token's tenant and customer."""

    tenant_name: str
    customer_name: str
    locale: str  # the page's (and the emails') locale
    time_zone: str | None
    language: str  # the language the emails speak now ("fr")
    languages: list[tuple[str, str]]  # (code, its own name), the tenant's template languages
    pdf_link_only: bool
    contacts: list[ContactRow]
    pending: list[PendingRow]


def who(opened: Opened) -> str:
    """The audit's "by" for an action through a View link: the customer, via which email."""
    message = opened.message
    if message is not None:
        return f"customer via the View link of email {message.uid}"[:200]
    return f"customer via a View link of {opened.claims.document}"[:200]


def template_languages() -> list[str]:
    """The languages the tenant's emails can be written in: English and each catalog's."""
    return available_languages(LOCALE_ROOT)


def language_name(code: str) -> str:
    """``code``'s name in that language ("français"), as a language picker shows it."""
    return Locale.parse(code).get_display_name(code) or code


def effective_language(customer: Customer, tenant: Tenant) -> tuple[str, str]:
    """(locale, language) the customer's emails and page use now."""
    chosen = choose_language(
        LOCALE_ROOT,
        normalise_locale(customer.chosen_locale or customer.locale, tenant.locale),
        normalise_locale(tenant.locale),
    )
    return chosen.locale, chosen.language


def _contacts(session: Session, customer: Customer) -> list[Contact]:
    return list(
        session.exec(
            select(Contact)
            .where(
                col(Contact.tenant_id) == customer.tenant_id,
                col(Contact.customer_id) == customer.id,
            )
            .order_by(col(Contact.id))
        )
    )


def read_preferences(services: Services, opened: Opened) -> Preferences | None:
    """The preferences of the link's customer, or None when the link grants no account."""
    now = services.clock.now()
    _, config = services.tenants.config(opened.claims.tenant_id)
    with Session(services.engine) as session:
        customer = account_customer(session, opened)
        tenant = session.get(Tenant, opened.claims.tenant_id)
        if customer is None or tenant is None:
            return None
        contacts = _contacts(session, customer)
        blocks = blocks_of(session, customer.tenant_id, [c.email for c in contacts], now)
        pending = session.exec(
            select(ContactRequest)
            .where(
                col(ContactRequest.customer_id) == customer.id,
                col(ContactRequest.status) == RequestStatus.PENDING,
                col(ContactRequest.expires_at) > now,
            )
            .order_by(col(ContactRequest.id))
        ).all()
        locale, language = effective_language(customer, tenant)
        return Preferences(
            tenant_name=config.name,
            customer_name=customer.name,
            locale=locale,
            time_zone=customer.time_zone or tenant.time_zone,
            language=language,
            languages=[(code, language_name(code)) for code in template_languages()],
            pdf_link_only=customer.pdf_link_only,
            contacts=[ContactRow(c.email, c.name, c.email.lower() in blocks) for c in contacts],
            pending=[PendingRow(r.email, r.replaces, r.expires_at) for r in pending],
        )


def locked(session: Session, customer: Customer | None) -> Customer | None:
    """``customer`` with its row locked until the transaction ends (PostgreSQL; SQLite's
    writers are serialised already), so two removals at once cannot leave it no contact."""
    if customer is None:
        return None
    # populate_existing: the row as it is once locked, not as the session first read it.
    return session.exec(
        select(Customer)
        .where(col(Customer.id) == customer.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def over_limit(session: Session, customer: Customer, now: datetime) -> bool:
    """Whether the customer made :data:`CHANGES_PER_HOUR` changes in the last hour."""
    recent = session.exec(
        select(sa.func.count()).where(
            col(PreferenceChange.customer_id) == customer.id,
            col(PreferenceChange.at) > now - timedelta(hours=1),
        )
    ).one()
    return int(recent) >= CHANGES_PER_HOUR


def record_change(
    session: Session,
    customer: Customer,
    kind: ChangeKind,
    *,
    by: str,
    now: datetime,
    old: str | None = None,
    new: str | None = None,
    erp: list[str] | None = None,
    webhooks: Webhooks | None = None,
) -> PreferenceChange:
    """Write one change to the audit (an addition or removal with the ERP's list stands), and
    tell the ERP of each applied one (``customer.preferences_changed``), in the same
    transaction: the ERP is where the fix belongs too, as with a clerk's correction."""
    change = PreferenceChange(
        tenant_id=customer.tenant_id,
        customer_id=customer.id or 0,
        kind=kind,
        old=old,
        new=new,
        by=by,
        at=now,
        erp_listed=erp,
        standing=erp is not None,
    )
    session.add(change)
    log.info("customer %s: %s by %s", customer.id, kind.value, by)
    if webhooks is not None and kind is not ChangeKind.CONTACT_REQUESTED:
        data = {"customer": customer.external_id, "change": kind.value, "old": old, "new": new}
        webhooks.emit(
            session,
            tenant_id=customer.tenant_id,
            event="customer.preferences_changed",
            data={**data, "by": by, "at": now.isoformat()},
            now=now,
        )
    return change


def set_delivery(
    services: Services, opened: Opened, *, pdf_link_only: bool, language: str
) -> Outcome | None:
    """Save the customer's PDF delivery and language; None: the link grants no account."""
    now = services.clock.now()
    by = who(opened)
    with session_scope(services.engine) as session:
        # Locked: a double click finds the first one's change made, and changes nothing.
        customer = locked(session, account_customer(session, opened))
        tenant = session.get(Tenant, opened.claims.tenant_id)
        if customer is None or tenant is None:
            return None
        if language not in template_languages():
            return Outcome.UNKNOWN_LANGUAGE
        if over_limit(session, customer, now):
            return Outcome.LIMITED
        changed = False
        if customer.pdf_link_only != pdf_link_only:
            old, new = ("link", "attach") if customer.pdf_link_only else ("attach", "link")
            change = record_change(
                session,
                customer,
                ChangeKind.PDF_DELIVERY,
                by=by,
                now=now,
                old=old,
                new=new,
                webhooks=services.webhooks,
            )
            before = [c.email for c in _contacts(session, customer)]
            queue_change_notice(
                services, session, customer, change, before=before, now=now, old=old, new=new
            )
            customer.pdf_link_only = pdf_link_only
            changed = True
        _, current = effective_language(customer, tenant)
        if language != current:
            record_change(
                session,
                customer,
                ChangeKind.LANGUAGE,
                by=by,
                now=now,
                old=current,
                new=language,
                webhooks=services.webhooks,
            )
            erp = normalise_locale(customer.locale, tenant.locale)
            # Back to the ERP's own language: nothing stands in for it any more.
            same = erp is not None and erp.split("_")[0] == language
            customer.chosen_locale = None if same else language
            changed = True
        if not changed:
            return Outcome.UNCHANGED
        customer.updated_at = now
        session.add(customer)
    return Outcome.SAVED


def remove_contact(services: Services, opened: Opened, *, email: str) -> Outcome | None:
    """Remove one of the customer's contacts, never the last; None: no account here."""
    now = services.clock.now()
    with session_scope(services.engine) as session:
        customer = locked(session, account_customer(session, opened))
        if customer is None:
            return None
        contacts = _contacts(session, customer)
        row = next((c for c in contacts if c.email == email), None)
        if row is None:
            return Outcome.UNKNOWN_CONTACT
        if len(contacts) <= 1:
            return Outcome.LAST_CONTACT
        if over_limit(session, customer, now):
            return Outcome.LIMITED
        erp = erp_listed(session, customer)
        # A removal stands against the ERP's list only if the ERP lists the address at all.
        listed = (row.erp_email or row.email) in erp
        change = record_change(
            session,
            customer,
            ChangeKind.CONTACT_REMOVED,
            by=who(opened),
            now=now,
            old=row.erp_email or row.email,
            erp=erp if listed else None,
            webhooks=services.webhooks,
        )
        for added in standing_changes(session, customer.id or 0):
            if added.kind is ChangeKind.CONTACT_ADDED and added.new == row.email:
                added.standing, added.ended_at = False, now  # the customer took it back
                session.add(added)
        # Told to every contact there was, the removed one too.
        before = [c.email for c in contacts]
        queue_change_notice(
            services, session, customer, change, before=before, now=now, old=row.email
        )
        session.delete(row)
        session.flush()
        touch_customer_invoices(session, customer.id or 0, now)
    return Outcome.REMOVED


def for_clerk(services: Services, customer_id: int, *, tenant: str | None) -> dict[str, Any]:
    """The customer's own choices and changes (newest first) for the clerk's customer page."""
    tenant_id = services.tenants.id(tenant)
    with Session(services.engine) as session:
        customer = session.get(Customer, customer_id)
        if customer is None or customer.tenant_id != tenant_id:
            return {"changes": [], "chosen_locale": None, "pdf_link_only": False, "pending": []}
        rows = session.exec(
            select(PreferenceChange)
            .where(
                col(PreferenceChange.tenant_id) == tenant_id,
                col(PreferenceChange.customer_id) == customer_id,
            )
            .order_by(col(PreferenceChange.at).desc(), col(PreferenceChange.id).desc())
            .limit(50)
        ).all()
        pending = session.exec(
            select(ContactRequest.email).where(
                col(ContactRequest.customer_id) == customer_id,
                col(ContactRequest.status) == RequestStatus.PENDING,
                col(ContactRequest.expires_at) > services.clock.now(),
            )
        ).all()
        return {
            "chosen_locale": customer.chosen_locale,
            "pdf_link_only": customer.pdf_link_only,
            "pending": list(pending),
            "changes": [
                {
                    "kind": r.kind.value,
                    "old": r.old,
                    "new": r.new,
                    "by": r.by,
                    "at": r.at.isoformat(),
                    "standing": r.standing,
                    "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                }
                for r in rows
            ],
        }
