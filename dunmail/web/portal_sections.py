"""The account page's bank-transfer box and statements, as context for its template.

``portal.py`` renders the page; this adds what these two sections need (``bank``,
``statements``, ``transfer_action``), from the account it already read and the tenant's config,
with no query of its own. Every URL is a sub-path of the View link's token
(``portal_documents.py`` serves them), so revoking that token stops them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dunmail.app import Services
from dunmail.services.portal import Account, Refusal
from dunmail.web.link_service import Opened
from dunmail.web.portal_bank import BankBox, build_bank_box
from dunmail.web.portal_page import DATE_FORMAT
from mailer.content.formatting import format_day, format_money
from mailer.ledger.localtime import local_date


@dataclass(frozen=True)
class StatementRow:
    period: str  # "1 Mar 2026 – 31 Mar 2026" in the page's locale
    currency: str
    balance: str
    pdf_url: str | None


@dataclass(frozen=True)
class Statements:
    sent: list[StatementRow]
    current: list[tuple[str, str]]  # currency, URL of the statement as it stands now


def _day(value: datetime, account: Account) -> str:
    return format_day(local_date(value, account.time_zone), DATE_FORMAT, account.locale)


def build_statements(services: Services, token: str, account: Account) -> Statements:
    """The statements the customer was sent, and one per open currency to download now."""
    store, renderer = services.pdfs.store, services.pdfs.renderer
    base = f"/l/{token}/account"
    sent = [
        StatementRow(
            period=f"{_day(s.period_start, account)} – {_day(s.period_end, account)}",
            currency=s.currency,
            balance=format_money(s.closing_minor, s.currency, account.locale),
            pdf_url=f"{base}/statements/{s.id}/pdf" if s.stored or store is not None else None,
        )
        for s in account.statements
    ]
    currencies = sorted({i.currency for i in account.invoices}) if renderer is not None else []
    return Statements(sent, [(c, f"{base}/statement/{c}/pdf") for c in currencies])


def section_context(
    services: Services,
    token: str,
    opened: Opened,
    account: Account,
    *,
    transfer: Sequence[int] | None = None,
) -> tuple[dict[str, Any], Refusal | None]:
    """The template's ``bank`` (None: no box), ``statements`` and ``transfer_action``; and
    the refusal of a ``transfer`` selection (the box then shows the default transfers)."""
    tenant_id = opened.claims.tenant_id
    _, config = services.tenants.config(tenant_id)
    now = services.clock.now()
    box = build_bank_box(account, config.bank, tenant_id=tenant_id, now=now, chosen=transfer)
    refused = box if isinstance(box, Refusal) else None
    if refused is not None:
        box = build_bank_box(account, config.bank, tenant_id=tenant_id, now=now)
    context = {
        "bank": box if isinstance(box, BankBox) else None,
        "statements": build_statements(services, token, account),
        "transfer_action": f"/l/{token}/account/transfer",
    }
    return context, refused
