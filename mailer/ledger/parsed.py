"""PURE: the parsed records of an import document: validated, in minor units and aware UTC.

``Parsed*`` values are what ``mailer.ledger.documents.parse_document`` returns and the import
sections upsert; ``Priced.content_hash`` tells a new version of an invoice or an estimate from a
re-import.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from mailer.errors import DocumentError
from mailer.ledger.models import (
    ContactRole,
    EstimateStatus,
    InvoiceStatus,
    PaymentPlanStatus,
    SubscriptionInterval,
    SubscriptionStatus,
)


@dataclass(frozen=True)
class ParsedContact:
    email: str
    name: str | None
    roles: tuple[ContactRole, ...]
    send_invoices: bool | None


@dataclass(frozen=True)
class ParsedCustomer:
    where: str
    external_id: str
    name: str
    locale: str | None
    time_zone: str | None
    chase: bool | None
    contacts: tuple[ParsedContact, ...] | None
    cadence: str | None = None  # None: keep; "": the tenant's default
    statements: str | None = None  # None: keep; "": the tenant's schedule
    billing_address: tuple[str, ...] | None = None  # None: keep; (): none
    tax_id: str | None = None  # None: keep; "": none


@dataclass(frozen=True)
class ParsedLine:
    """A line in minor units; ``as_json()`` is the shape stored in ``Invoice.lines``.

    ``net_minor`` is quantity x unit price rounded half-even to the minor unit, and
    ``tax_minor`` is ``net_minor`` x rate / 100, rounded the same way, line by line.
    """

    description: str
    quantity: Decimal
    unit_price_minor: int
    tax_rate: Decimal | None
    net_minor: int
    tax_minor: int

    @property
    def total_minor(self) -> int:
        return self.net_minor + self.tax_minor

    def content(self) -> dict[str, Any]:
        """The line as given (no derived totals), canonically spelled: the hash input."""
        return {
            "description": self.description,
            "quantity": _canonical(self.quantity),
            "unit_price_minor": self.unit_price_minor,
            "tax_rate": None if self.tax_rate is None else _canonical(self.tax_rate),
        }

    def as_json(self) -> dict[str, Any]:
        """The stored line: ``content()`` plus the rounded net, tax and total."""
        return {
            "description": self.description,
            "quantity": _canonical(self.quantity),
            "unit_price_minor": self.unit_price_minor,
            "tax_rate": None if self.tax_rate is None else _canonical(self.tax_rate),
            "net_minor": self.net_minor,
            "tax_minor": self.tax_minor,
            "total_minor": self.total_minor,
        }


class Priced:
    """What an invoice and an estimate share: totals of their lines, and the content hash.

    ``content_hash`` is the sha256 of what the customer sees; the status is left out, so
    open -> void is no new version. Only inputs go in (not the rounded totals), so a change of
    rounding rule would not re-version every document in the ledger. ``HASHED_DATES`` names
    the document's own dates beside ``issued_at`` (an invoice's due date, an estimate's expiry).
    """

    HASHED_DATES: ClassVar[tuple[str, ...]]
    number: str
    customer: str
    currency: str
    issued_at: datetime
    lines: tuple[ParsedLine, ...]

    @property
    def tax_minor(self) -> int:
        return sum(line.tax_minor for line in self.lines)

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)

    @property
    def content_hash(self) -> str:
        dates = ("issued_at", *self.HASHED_DATES)
        return _digest(
            {
                "number": self.number,
                "customer": self.customer,
                "currency": self.currency,
                **{name: getattr(self, name).isoformat() for name in dates},
                "lines": [line.content() for line in self.lines],
            }
        )


@dataclass(frozen=True)
class ParsedInvoice(Priced):
    HASHED_DATES = ("due_at",)

    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    due_at: datetime
    status: InvoiceStatus
    lines: tuple[ParsedLine, ...]


@dataclass(frozen=True)
class ParsedAllocation:
    where: str
    invoice: str
    amount_minor: int


@dataclass(frozen=True)
class ParsedPayment:
    where: str
    external_id: str
    customer: str
    amount_minor: int
    currency: str
    received_at: datetime
    allocations: tuple[ParsedAllocation, ...]
    method: str | None = None
    receipt_number: str | None = None  # None: the receipt shows the external id


@dataclass(frozen=True)
class ParsedCreditNote:
    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    invoice: str | None
    lines: tuple[ParsedLine, ...]
    reason: str | None = None

    @property
    def amount_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)


@dataclass(frozen=True)
class ParsedRefund:
    where: str
    external_id: str
    payment: str
    amount_minor: int
    currency: str
    refunded_at: datetime
    reason: str | None
    method: str | None
    receipt_number: str | None  # None: the receipt shows the external id


@dataclass(frozen=True)
class ParsedAutopayFailure:
    where: str
    external_id: str
    customer: str
    invoice: str | None
    amount_minor: int
    currency: str
    attempted_at: datetime
    decline_reason: str
    next_retry_at: datetime | None
    method: str | None


@dataclass(frozen=True)
class ParsedSubscription:
    where: str
    external_id: str
    customer: str
    plan: str
    amount_minor: int
    currency: str
    interval: SubscriptionInterval
    status: SubscriptionStatus
    started_at: datetime
    next_bill_at: datetime | None
    cancelled_at: datetime | None
    ends_at: datetime | None


@dataclass(frozen=True)
class ParsedEstimate(Priced):
    HASHED_DATES = ("valid_until",)

    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    valid_until: datetime
    status: EstimateStatus
    lines: tuple[ParsedLine, ...]


@dataclass(frozen=True)
class ParsedInstallment:
    due_at: datetime
    amount_minor: int

    def as_json(self) -> dict[str, Any]:
        """The stored installment (``PaymentPlan.installments``), as the email shows it."""
        return {"due_at": self.due_at.isoformat(), "amount_minor": self.amount_minor}


@dataclass(frozen=True)
class ParsedPaymentPlan:
    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    status: PaymentPlanStatus
    approve_by: datetime | None
    installments: tuple[ParsedInstallment, ...]
    invoices: tuple[str, ...]  # external ids, in the order given

    @property
    def total_minor(self) -> int:
        return sum(i.amount_minor for i in self.installments)


@dataclass
class ParsedDocument:
    """The valid records, the errors of the others, and the ids of the records refused."""

    customers: list[ParsedCustomer] = field(default_factory=list)
    invoices: list[ParsedInvoice] = field(default_factory=list)
    credit_notes: list[ParsedCreditNote] = field(default_factory=list)
    payments: list[ParsedPayment] = field(default_factory=list)
    refunds: list[ParsedRefund] = field(default_factory=list)
    autopay_failures: list[ParsedAutopayFailure] = field(default_factory=list)
    subscriptions: list[ParsedSubscription] = field(default_factory=list)
    estimates: list[ParsedEstimate] = field(default_factory=list)
    payment_plans: list[ParsedPaymentPlan] = field(default_factory=list)
    errors: list[DocumentError] = field(default_factory=list)
    rejected: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _digest(content: dict[str, Any]) -> str:
    """sha256 of ``content`` as canonical JSON: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Decimal) -> str:
    """One spelling per value: "2.50" and "2.5" hash the same."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text
