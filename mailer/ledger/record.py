"""PURE: the ERP import document as the ERP sends it: field types and the pydantic models.

Only the shape and the spelling of each field are checked here (``extra="forbid"``, strict
strings, exact decimals); what the values mean together (minor units, zones, totals) is
``mailer.ledger.documents``'s job. A field validator raises ``ValueError`` and its message is what
the import report shows at that field's position.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated
from zoneinfo import available_timezones

from babel import Locale, UnknownLocaleError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
)

from mailer.address import parse_addr_spec
from mailer.dunning_config import parse_statement_schedule
from mailer.ledger.models import (
    ContactRole,
    EstimateStatus,
    InvoiceStatus,
    PaymentPlanStatus,
    SubscriptionInterval,
    SubscriptionStatus,
)
from mailer.ledger.money import parse_currency, parse_decimal

_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_CODE = re.compile(r"[a-z0-9_]{1,63}")


# -- field types --------------------------------------------------------------------------------


def _locale(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError('must be a locale such as "en" or "fr_CA"')
    try:
        return str(Locale.parse(value, sep="-" if "-" in value else "_"))
    except (ValueError, UnknownLocaleError):
        raise ValueError(f"unknown locale {value!r}") from None


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def _zone(value: object) -> str:
    if not isinstance(value, str) or value not in _zones():
        raise ValueError(
            f'unknown time zone {value!r} (expected an IANA name such as "Europe/Paris")'
        )
    return value


def _statement_schedule(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError('must be a string such as "monthly:1", "weekly:fri" or "never"')
    if value == "":
        return value  # back to the tenant's schedule
    parse_statement_schedule(value)
    return value.strip().lower()


def _email(value: object) -> str:
    """A contact address, normalised by :func:`~mailer.address.parse_addr_spec`."""
    if not isinstance(value, str):
        raise ValueError("must be an email address as a string")
    return parse_addr_spec(value)


def _code(value: object) -> str:
    """A provider's machine code such as ``insufficient_funds``: lower case, digits, ``_``."""
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise ValueError(f'must be a code such as "insufficient_funds", got {value!r}')
    return value


# Stamps outside these years are refused: near year 1 or 9999 the move to UTC (or a grace,
# a link's expiry, a cadence step added later) leaves datetime's range with an OverflowError.
STAMP_YEARS = (1900, 9000)


def _stamp(value: object) -> date | datetime:
    """An ISO 8601 date or date-time; naive ones are placed in a zone later."""
    if isinstance(value, str):
        try:
            if _DATE_ONLY.fullmatch(value):
                stamp: date | datetime = date.fromisoformat(value)
            else:
                stamp = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if not STAMP_YEARS[0] <= stamp.year <= STAMP_YEARS[1]:
                low, high = STAMP_YEARS
                raise ValueError(f"year {stamp.year} is out of range ({low} to {high})")
            return stamp
    raise ValueError(f'must be an ISO 8601 date or date-time such as "2026-03-01", got {value!r}')


Text = Annotated[str, StringConstraints(strict=True, max_length=1000)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=300)]
ExternalId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Amount = Annotated[Decimal, PlainValidator(parse_decimal)]
Currency = Annotated[str, PlainValidator(parse_currency)]
LocaleName = Annotated[str, PlainValidator(_locale)]
ZoneName = Annotated[str, PlainValidator(_zone)]
Email = Annotated[str, PlainValidator(_email)]
Stamp = Annotated[date | datetime, PlainValidator(_stamp)]
Label = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Code = Annotated[str, PlainValidator(_code)]
# A postal address line as invoices print it (one list item per line) and a tax id such as a VAT
# number ("FR40303265045"); "" clears the tax id, [] the address.
AddressLine = Annotated[
    str, StringConstraints(strict=True, max_length=200, pattern=r"^[^\r\n\x00]*$")
]
TaxId = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, max_length=50)]


# -- wire models: the document exactly as the ERP sends it ---------------------------------------


class Record(BaseModel):
    """Base of the wire models: an unknown field is an error, so a typo cannot pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactRecord(Record):
    """A person to email. ``send_invoices`` absent keeps the ledger's value (true when new)."""

    email: Email
    name: Annotated[str, StringConstraints(strict=True, max_length=300)] | None = None
    roles: list[ContactRole] = Field(default_factory=list)
    send_invoices: StrictBool | None = None


class CustomerRecord(Record):
    """A customer; ``contacts`` absent leaves its contacts alone, ``[]`` removes them all."""

    id: ExternalId
    name: Name
    locale: LocaleName | None = None
    time_zone: ZoneName | None = None
    chase: StrictBool | None = None  # absent keeps the AR team's own switch
    # A cadence named in [tenants.<slug>.dunning.cadences]; "" goes back to the tenant's default
    cadence: Annotated[str, StringConstraints(strict=True, max_length=63)] | None = None
    # The customer's own statement schedule ("monthly:15", "weekly:fri", "never"); "" goes
    # back to the tenant's [dunning.statements]
    statements: Annotated[str, PlainValidator(_statement_schedule)] | None = None
    # What the customer's invoices print under "Bill to"; absent keeps the ledger's value
    billing_address: Annotated[list[AddressLine], Field(max_length=10)] | None = None
    tax_id: TaxId | None = None
    contacts: list[ContactRecord] | None = None


class LineRecord(Record):
    """One invoice or credit-note line; ``tax_rate`` is a percentage ("20" is 20 %)."""

    description: Text
    quantity: Amount
    unit_price: Amount
    tax_rate: Amount | None = None


class InvoiceRecord(Record):
    id: ExternalId
    number: ExternalId
    customer: ExternalId
    currency: Currency
    issued_at: Stamp
    due_at: Stamp
    status: InvoiceStatus = InvoiceStatus.OPEN
    lines: list[LineRecord] = Field(min_length=1)


class AllocationRecord(Record):
    invoice: ExternalId
    amount: Amount


class PaymentRecord(Record):
    id: ExternalId
    customer: ExternalId
    amount: Amount
    currency: Currency
    received_at: Stamp
    invoices: list[AllocationRecord] = Field(default_factory=list)
    method: Label | None = None  # "Visa •••• 4242", shown on the receipt as given
    receipt_number: ExternalId | None = None  # absent: the receipt shows the payment's id


class CreditNoteRecord(Record):
    id: ExternalId
    number: ExternalId
    customer: ExternalId
    currency: Currency
    issued_at: Stamp
    invoice: ExternalId | None = None
    lines: list[LineRecord] = Field(min_length=1)
    reason: Text | None = None  # shown in the email as given


class RefundRecord(Record):
    """Money given back on a payment (an external id); the customer is the payment's."""

    id: ExternalId
    payment: ExternalId
    amount: Amount
    currency: Currency
    refunded_at: Stamp
    reason: Text | None = None
    method: Label | None = None
    receipt_number: ExternalId | None = None  # absent: the refund's id


class AutopayFailureRecord(Record):
    """A declined automatic collection; ``decline_reason`` is the provider's code."""

    id: ExternalId
    customer: ExternalId
    invoice: ExternalId | None = None
    amount: Amount
    currency: Currency
    attempted_at: Stamp
    decline_reason: Code
    next_retry_at: Stamp | None = None  # absent: no more automatic attempts
    method: Label | None = None


class SubscriptionRecord(Record):
    """A recurring plan; ``next_bill_at`` is the next renewal, ``ends_at`` the end of service."""

    id: ExternalId
    customer: ExternalId
    plan: Name
    amount: Amount
    currency: Currency
    interval: SubscriptionInterval
    status: SubscriptionStatus
    started_at: Stamp
    next_bill_at: Stamp | None = None
    cancelled_at: Stamp | None = None
    ends_at: Stamp | None = None


class EstimateRecord(Record):
    """A quote: its lines are priced like an invoice's; it is emailed once ``sent``."""

    id: ExternalId
    number: ExternalId
    customer: ExternalId
    currency: Currency
    issued_at: Stamp
    valid_until: Stamp
    status: EstimateStatus
    lines: list[LineRecord] = Field(min_length=1)


class InstallmentRecord(Record):
    due_at: Stamp
    amount: Amount


class PaymentPlanRecord(Record):
    """Installments for some of a customer's invoices (their external ids, in ``invoices``)."""

    id: ExternalId
    number: ExternalId
    customer: ExternalId
    currency: Currency
    status: PaymentPlanStatus
    approve_by: Stamp | None = None  # when a proposed plan must be approved, if at all
    installments: list[InstallmentRecord] = Field(min_length=1)
    invoices: list[ExternalId] = Field(min_length=1)
