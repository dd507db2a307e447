"""PURE: the account page's bank-transfer box: the tenant's account, the references, an EPC QR.

The box is the email's own block (``mailer/content/bank_transfer.py::bank_transfer``: holder,
IBAN, BIC, amount, RF reference and the EPC QR code as a PNG ``data:`` URI, so the page loads
nothing and its CSP's ``img-src data:`` shows it), built for what the customer would pay:

* nothing chosen: per currency, everything **overdue** under the customer's reference (what
  the overdue summary email asks for), else everything **open** (what an open-item statement
  asks for);
* invoices ticked and "Bank transfer for the selected invoices" pressed (a form post: the page
  runs no script, so the amount follows the ticks on that round trip): one invoice is paid
  under its own reference, as its invoice email asks; several under the customer's reference,
  which the bank import applies to the customer's open invoices oldest due first
  (``mailer/ledger/bank_matching.py``), so when the ticked ones are not the oldest the box says
  to make one transfer per invoice with the reference shown beside each.

Amounts are ``format_money`` in the page's locale, as everywhere on the page and in the email.
Without ``[tenants.<slug>.bank]`` there is no box (None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from dunmail.services.portal import Account, OpenInvoice, Refusal
from mailer.bank_config import BankConfig
from mailer.content.bank_transfer import bank_transfer
from mailer.content.formatting import format_money
from mailer.ledger.localtime import days_between
from mailer.ledger.references import customer_reference, format_reference, invoice_reference


@dataclass(frozen=True)
class Transfer:
    """One transfer to make: what it pays, how much, under which reference, and its QR."""

    currency: str
    covers: str  # "overdue", "open", "invoice" (one ticked) or "selected" (several ticked)
    numbers: list[str]  # the invoices it is for
    amount: str
    reference: str  # grouped in fours, as printed
    qr: str | None  # data:image/png;base64,... (EUR within the EPC's bounds only)
    oldest_first: bool = False  # several ticked that are not the oldest: say how it applies


@dataclass(frozen=True)
class BankBox:
    account_name: str
    iban: str  # grouped in fours
    bic: str | None
    customer_reference: str
    references: dict[int, str]  # invoice id -> its own reference, for the list
    transfers: list[Transfer]
    chosen: tuple[int, ...]  # the ticked invoices the transfer is for (empty: none ticked)


def build_bank_box(
    account: Account,
    bank: BankConfig | None,
    *,
    tenant_id: int,
    now: datetime,
    chosen: Sequence[int] | None = None,
) -> BankBox | Refusal | None:
    """The box for ``account`` at ``now`` (None: the tenant has no bank account configured).

    ``chosen``: ids of ticked invoices, each of which must be one of the account's open
    invoices, all in one currency (else a :class:`Refusal`)."""
    if bank is None:
        return None
    mine = {i.id: i for i in account.invoices}
    cref = customer_reference(tenant_id, account.customer_id)
    if chosen is not None:
        picked = [mine[i] for i in dict.fromkeys(chosen) if i in mine]
        if not chosen:
            return Refusal.NOTHING
        if len(picked) != len(set(chosen)):
            return Refusal.FOREIGN
        if len({i.currency for i in picked}) != 1:
            return Refusal.MIXED
        transfers = [_selected(account, bank, tenant_id=tenant_id, cref=cref, picked=picked)]
    else:
        transfers = [
            _default(account, bank, cref=cref, currency=currency, now=now)
            for currency in sorted({i.currency for i in account.invoices})
        ]
    shown = bank_transfer(
        bank, tenant_name=account.tenant_name, reference=cref, amount_minor=0, currency="EUR"
    )
    return BankBox(
        account_name=shown["account_name"],
        iban=shown["iban_display"],
        bic=shown["bic"],
        customer_reference=shown["reference_display"],
        references={
            i.id: format_reference(invoice_reference(tenant_id, i.id)) for i in account.invoices
        },
        transfers=transfers,
        chosen=tuple(dict.fromkeys(chosen)) if chosen is not None else (),
    )


def _transfer(
    account: Account,
    bank: BankConfig,
    *,
    reference: str,
    invoices: Sequence[OpenInvoice],
    covers: str,
    oldest_first: bool = False,
) -> Transfer:
    currency = invoices[0].currency
    amount = sum(i.balance_minor for i in invoices)
    data = bank_transfer(
        bank,
        tenant_name=account.tenant_name,
        reference=reference,
        amount_minor=amount,
        currency=currency,
    )
    return Transfer(
        currency=currency,
        covers=covers,
        numbers=[i.number for i in invoices],
        amount=format_money(amount, currency, account.locale),
        reference=data["reference_display"],
        qr=data["qr"],
        oldest_first=oldest_first,
    )


def _default(
    account: Account, bank: BankConfig, *, cref: str, currency: str, now: datetime
) -> Transfer:
    """Everything overdue in ``currency``, else everything open in it."""
    open_ = [i for i in account.invoices if i.currency == currency]
    overdue = [i for i in open_ if days_between(i.due_at, now, account.time_zone) > 0]
    return _transfer(
        account,
        bank,
        reference=cref,
        invoices=overdue or open_,
        covers="overdue" if overdue else "open",
    )


def _selected(
    account: Account,
    bank: BankConfig,
    *,
    tenant_id: int,
    cref: str,
    picked: Sequence[OpenInvoice],
) -> Transfer:
    if len(picked) == 1:
        ref = invoice_reference(tenant_id, picked[0].id)
        return _transfer(account, bank, reference=ref, invoices=picked, covers="invoice")
    # The bank import applies a customer reference to the open invoices oldest due first
    # (bank_matching._open_of: due date, then id): say so unless that is what was ticked.
    same = sorted(
        (i for i in account.invoices if i.currency == picked[0].currency),
        key=lambda i: (i.due_at, i.id),
    )
    oldest = {i.id for i in same[: len(picked)]} == {i.id for i in picked}
    ordered = sorted(picked, key=lambda i: (i.due_at, i.id))
    return _transfer(
        account, bank, reference=cref, invoices=ordered, covers="selected", oldest_first=not oldest
    )
