"""SERVICE: the notice a customer's contacts get when their contacts or PDF delivery change.

A View link can be forwarded, and whoever holds it reaches the account page: they could add
their own address (confirming it proves only that they own it), remove the real contacts or
switch the PDFs to links. So, as banks and billing portals do, every applied change of the
contacts (added, on confirmation; changed, on confirmation; removed) or of the PDF delivery
queues a ``contacts_changed`` email to the contacts **as they were before the change**: the
removed or replaced address included, the new address never (it confirmed the change itself,
and a notice to it alone would warn nobody). The notice says what changed and when, and "if
this was not you, reply to this email or contact <tenant>"; its Reply-To is the tenant's, as
for every email, so the answer reaches the AR team, who can undo the change.

It goes through the outbox like any email, queued in the transaction that makes the change
(both, or neither), in the customer's language as it was before the change, and keyed by the
change's audit row (``preference_change:<id>``): a retry of the same change is one message,
and a double click is one change (the second finds nothing to change, or a used link). The
notice carries addresses and a time only: no link, no token, no secret.

A language change alone sends no notice (it hides nothing from the contacts); the tenant can
turn the notice off like any kind (``[tenants.<slug>.emails.contacts_changed] enabled``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session

from dunmail.app import Services
from mailer.content.context import party_context
from mailer.content.kinds import Kind
from mailer.ledger.models import Customer, Tenant
from mailer.ledger.preference_models import ChangeKind, PreferenceChange
from mailer.outbound.models import Message
from mailer.outbound.requests import EnqueueRequest

# The changes the contacts are told of; a request (not yet applied) and a language are not.
NOTIFIED = frozenset(
    {
        ChangeKind.CONTACT_ADDED,
        ChangeKind.CONTACT_CHANGED,
        ChangeKind.CONTACT_REMOVED,
        ChangeKind.PDF_DELIVERY,
    }
)


def notice_recipients(before: Iterable[str], *, new: str | None) -> list[str]:
    """The contacts as they were before the change, each once, never the new address."""
    seen: set[str] = set()
    found: list[str] = []
    skip = new.lower() if new else None
    for address in before:
        key = address.strip().lower()
        if key and key != skip and key not in seen:
            seen.add(key)
            found.append(address.strip())
    return found


def queue_change_notice(
    services: Services,
    session: Session,
    customer: Customer,
    change: PreferenceChange,
    *,
    before: Iterable[str],
    now: datetime,
    old: str | None = None,
    new: str | None = None,
) -> Message | None:
    """Queue the notice of ``change`` to the contacts ``before`` it, in ``session``'s
    transaction; call it before the customer's row itself changes (its language is the
    notice's). ``old``/``new`` are the addresses as the contacts know them (or "attach" /
    "link"). None when there is nobody to tell or the tenant does not send the notice."""
    if change.kind not in NOTIFIED:
        return None
    recipients = notice_recipients(before, new=new)
    _, config = services.tenants.config(customer.tenant_id)
    tenant = session.get(Tenant, customer.tenant_id)
    if not recipients or tenant is None or not config.sends(Kind.CONTACTS_CHANGED):
        return None
    if change.id is None:
        session.flush()  # the audit row's id is the notice's idempotency key
    told: dict[str, str] = {"kind": change.kind.value, "at": now.isoformat()}
    if old is not None:
        told["old"] = old
    if new is not None:
        told["new"] = new
    context = {
        **party_context(tenant=tenant, customer=customer, branding=config.branding.as_context()),
        "change": told,
    }
    return services.sending.queue.enqueue(
        session,
        EnqueueRequest(
            tenant_id=customer.tenant_id,
            kind=Kind.CONTACTS_CHANGED,
            recipients=recipients,
            context=context,
            document=f"preference_change:{change.id}",
            version=1,
            customer_id=customer.id,
        ),
        now=now,
    )
