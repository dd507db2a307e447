"""SERVICE: upsert imports into the ledger, allocate payments, settle invoices, record events."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from mailer.address import parse_addr_spec
from mailer.content.event_context import credit_note_context, payment_context
from mailer.content.kinds import Kind
from mailer.errors import DocumentError, NotFoundError
from mailer.ledger.agreements import AgreementImport
from mailer.ledger.billing import BillingImport
from mailer.ledger.documents import (
    MAX_LINES,
    SECTIONS,
    ParsedAutopayFailure,
    ParsedContact,
    ParsedCreditNote,
    ParsedCustomer,
    ParsedEstimate,
    ParsedInvoice,
    ParsedPayment,
    ParsedPaymentPlan,
    ParsedRefund,
    ParsedSubscription,
    parse_document,
)
from mailer.ledger.eventlog import EventLog, EventSpec, assign
from mailer.ledger.grace import grace_ends
from mailer.ledger.holds import touch_customer_invoices
from mailer.ledger.models import (
    Contact,
    ContactRole,
    CreditNote,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    Tenant,
)
from mailer.ledger.money import from_minor
from mailer.ledger.upsert import LedgerScope, Outcome, Upserted, row_id
from mailer.outbound.suppression import active as active_suppressions
from mailer.outbound.suppression import normal

log = logging.getLogger(__name__)

ROLE_PRIORITY = (ContactRole.BILLING, ContactRole.AP, ContactRole.ACCOUNTANT, ContactRole.PRIMARY)
_UNPAYABLE = (InvoiceStatus.DRAFT, InvoiceStatus.VOID)


class _Want(NamedTuple):
    """One allocation a document asks for, with where to report each kind of refusal."""

    invoice: Invoice
    amount_minor: int
    invoice_where: str
    amount_where: str


_Rec = TypeVar(
    "_Rec",
    ParsedCustomer,
    ParsedInvoice,
    ParsedCreditNote,
    ParsedPayment,
    ParsedRefund,
    ParsedAutopayFailure,
    ParsedSubscription,
    ParsedEstimate,
    ParsedPaymentPlan,
)


@dataclass
class RecordCounts:
    """What happened to the valid records of one type."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class KeptCorrection:
    """An address the ERP still lists that the import left as a clerk corrected it."""

    customer: str  # the customer's external id
    erp_email: str
    email: str


@dataclass
class ImportReport:
    """Counts per record type, and every refused record with its position in the document."""

    customers: RecordCounts = field(default_factory=RecordCounts)
    invoices: RecordCounts = field(default_factory=RecordCounts)
    credit_notes: RecordCounts = field(default_factory=RecordCounts)
    payments: RecordCounts = field(default_factory=RecordCounts)
    refunds: RecordCounts = field(default_factory=RecordCounts)
    autopay_failures: RecordCounts = field(default_factory=RecordCounts)
    subscriptions: RecordCounts = field(default_factory=RecordCounts)
    estimates: RecordCounts = field(default_factory=RecordCounts)
    payment_plans: RecordCounts = field(default_factory=RecordCounts)
    events: int = 0  # Event rows recorded: the receipts and notices this import asked for
    errors: list[DocumentError] = field(default_factory=list)
    corrections_kept: list[KeptCorrection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, RecordCounts]:
        """The counts keyed by the document's section names, in import order."""
        return {name: getattr(self, name) for name in SECTIONS}

    def summary(self) -> str:
        """One line for people: "customers 2 created, 0 updated, 1 unchanged; ...; 1 error".

        Sections without a valid record are left out: with nine sections, a line of zeros
        would hide the ones that matter.
        """
        parts = [
            f"{name.replace('_', ' ')} {c.created} created, {c.updated} updated, "
            f"{c.unchanged} unchanged"
            for name, c in self.counts().items()
            if c.created or c.updated or c.unchanged
        ]
        if self.events:
            parts.append(f"{self.events} event{'s' if self.events != 1 else ''} recorded")
        if kept := len(self.corrections_kept):
            parts.append(
                f"{kept} contact correction{'s' if kept != 1 else ''} kept over the ERP's address"
            )
        errors = len(self.errors)
        return "; ".join([*parts, f"{errors} invalid record{'s' if errors != 1 else ''}"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``--json`` output and the web API."""
        return {
            **{name: asdict(c) for name, c in self.counts().items()},
            "events": self.events,
            "errors": [{"where": e.where, "reason": e.reason} for e in self.errors],
            "corrections_kept": [asdict(k) for k in self.corrections_kept],
        }


def import_document(
    session: Session,
    *,
    tenant_id: int,
    data: object,
    now: datetime,
    cadences: Collection[str] | None = None,
    grace: timedelta = timedelta(minutes=5),
    billed_soon_days: int = 7,
    notice_max_age: timedelta | None = None,
    commits: Commits | None = None,
    max_lines: int = MAX_LINES,
) -> ImportReport:
    """Upsert ``data`` (a decoded import document) into ``tenant_id``'s ledger.

    Records are keyed by (tenant, external id) and applied in dependency order: customers with
    their contacts, invoices, credit notes, payments, refunds, autopay failures, subscriptions,
    estimates, payment plans.
    Each runs in its own SAVEPOINT, with the events it records, so a record refused by the
    ledger or by the database is reported and rolled back alone. The caller owns the
    transaction: nothing is committed here, except where ``commits`` (the CLI's batched import,
    mailer/ledger/importlock.py) is given the chance between records and after each ledger lookup of
    the parse, so a long import never holds SQLite's one write lock for long.

    Events (``Event`` rows) are the emails a record calls for, keyed by occasion so a
    re-import never repeats one: receipts, refunds and failed autopays are due at once; a credit
    note, a sent estimate and a proposed payment plan wait ``grace`` after their last edit, like
    a new invoice; a subscription's "billed soon" notice is due ``billed_soon_days`` before the
    bill (the tenant's ``[dunning]`` settings). An active payment plan holds the dunning of the
    invoices it covers (``mailer.ledger.agreements``). A payment, refund, failed autopay, credit
    note
    or subscription change that happened more than ``notice_max_age`` before ``now`` is
    recorded but not emailed (importing an ERP's history sends nobody a receipt).

    The ERP is the source of truth: a re-imported customer's contacts are replaced by the listed
    ones (unlisted contacts are deleted), except that ``chase`` and ``send_invoices`` keep the
    AR team's setting when the document leaves them out.

    ``cadences`` are the names a customer's ``cadence`` may take (the tenant's config); every
    change the scheduler must react to sets the invoices' ``next_action_at`` to ``now``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware UTC datetime")
    if grace < timedelta(0) or billed_soon_days < 1:
        raise ValueError("grace must not be negative and billed_soon_days must be at least 1")
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"no tenant with id {tenant_id}")
    importer = _Importer(
        session, tenant_id, now, cadences, grace=grace, notice_max_age=notice_max_age
    )
    billing = BillingImport(
        importer, billed_soon=timedelta(days=billed_soon_days), tenant_zone=tenant.time_zone
    )
    agreements = AgreementImport(importer, grace=grace)
    if commits is not None:
        commits.commit()  # the tenant is read; parsing writes nothing
    doc = parse_document(
        data,
        tenant_zone=tenant.time_zone,
        customer_zone=_then_commit(importer.zone_of, commits),
        payment_customer=_then_commit(importer.payment_customer, commits),
        max_lines=max_lines,
    )
    if commits is not None:
        commits.commit()
    importer.rejected = doc.rejected
    report = ImportReport(errors=list(doc.errors))
    steps: list[tuple[RecordCounts, Iterable[Any], Callable[[Any], Outcome]]] = [
        (report.customers, doc.customers, importer.customer),
        (report.invoices, doc.invoices, importer.invoice),
        (report.credit_notes, doc.credit_notes, importer.credit_note),
        (report.payments, doc.payments, importer.payment),
        (report.refunds, doc.refunds, billing.refund),
        (report.autopay_failures, doc.autopay_failures, billing.autopay_failure),
        (report.subscriptions, doc.subscriptions, billing.subscription),
        (report.estimates, doc.estimates, agreements.estimate),
        (report.payment_plans, doc.payment_plans, agreements.payment_plan),
    ]
    for counts, records, apply in steps:
        for record in records:
            outcome = _in_savepoint(session, importer, apply, record, report=report)
            if outcome:
                setattr(counts, outcome, getattr(counts, outcome) + 1)
            if commits is not None:
                commits.step()
    report.events = importer.events.recorded
    report.corrections_kept = importer.corrections_kept
    report.errors.sort(key=lambda e: _position(e.where))
    return report


class Commits(Protocol):
    """Where a long import may end its transaction. No SAVEPOINT is open at either call, and
    nothing the importer keeps between records (ids, external ids, counts) goes stale by a
    commit: every row it acts on is looked up again by the record that needs it."""

    def step(self) -> None:
        """A record is done: commit if the batch is full."""

    def commit(self) -> None:
        """Commit now: what follows for a while writes nothing."""


def _then_commit(
    lookup: Callable[[str], str | None], commits: Commits | None
) -> Callable[[str], str | None]:
    """``lookup``, ending the read transaction it opened: the parse between two lookups may
    run for seconds, and on SQLite even a read holds the write lock (mailer/db.py)."""
    if commits is None:
        return lookup

    def looked_up(key: str) -> str | None:
        found = lookup(key)
        commits.commit()
        return found

    return looked_up


def _in_savepoint(
    session: Session,
    importer: _Importer,
    apply: Callable[[_Rec], Outcome],
    record: _Rec,
    *,
    report: ImportReport,
) -> Outcome | None:
    """Apply one record under a SAVEPOINT; a refusal rolls back that record alone."""
    where = record.where
    recorded = importer.events.recorded
    try:
        with session.begin_nested():
            return apply(record)
    except DocumentError as exc:
        report.errors.append(exc)
    except SQLAlchemyError as exc:
        # Only the database's reason goes in the report: no SQL, no parameters.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        log.warning("import record %s refused by the database: %s", where, reason)
        report.errors.append(DocumentError(where, f"could not be stored: {reason}"))
    importer.events.recorded = recorded  # its events were rolled back with it
    return None


def _position(where: str) -> tuple[int, list[Any]]:
    """Sort key: document-level errors, then sections in import order, then natural order."""
    section = re.split(r"[\[.]", where, maxsplit=1)[0]
    rank = SECTIONS.index(section) + 1 if section in SECTIONS else 0
    return rank, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", where)]


class _Importer(LedgerScope):
    """The per-import state: one tenant, one ``now``; every query is scoped to the tenant."""

    def __init__(
        self,
        session: Session,
        tenant_id: int,
        now: datetime,
        cadences: Collection[str] | None = None,
        *,
        grace: timedelta = timedelta(minutes=5),
        notice_max_age: timedelta | None = None,
    ) -> None:
        events = EventLog(session, tenant_id, now, max_age=notice_max_age)
        super().__init__(session, tenant_id, now, events)
        self.cadences = cadences
        self.grace = grace
        self._zones: dict[str, str | None] = {}
        self._declared: dict[int, InvoiceStatus] = {}  # invoice id -> status the ERP sent now
        self.corrections_kept: list[KeptCorrection] = []

    # -- lookups ---------------------------------------------------------------------------

    def zone_of(self, external_id: str) -> str | None:
        """A ledger customer's time zone, for dates of records whose customer is not in the doc."""
        if external_id not in self._zones:
            customer = self.find(Customer, external_id)
            self._zones[external_id] = customer.time_zone if customer else None
        return self._zones[external_id]

    def payment_customer(self, external_id: str) -> str | None:
        """The customer (external id) of a ledger payment: a refund's dates are in its zone."""
        query = (
            select(Customer.external_id)
            .join(Payment, col(Payment.customer_id) == col(Customer.id))
            .where(
                col(Payment.tenant_id) == self.tenant_id, col(Payment.external_id) == external_id
            )
        )
        return self.session.exec(query).first()

    def _allocated(self, invoice_id: int | None) -> int:
        """How much of an invoice payments and credit notes settle, pending rows included."""
        query = sa.select(sa.func.coalesce(sa.func.sum(PaymentAllocation.amount_minor), 0)).where(
            col(PaymentAllocation.tenant_id) == self.tenant_id,
            col(PaymentAllocation.invoice_id) == invoice_id,
        )
        return int(self.session.scalar(query) or 0)

    def _allocations(self, **owner: int | None) -> list[PaymentAllocation]:
        query = select(PaymentAllocation).where(
            col(PaymentAllocation.tenant_id) == self.tenant_id,
            *(getattr(PaymentAllocation, k) == v for k, v in owner.items()),
        )
        return list(self.session.exec(query).all())

    # -- customers -------------------------------------------------------------------------

    def customer(self, rec: ParsedCustomer) -> Outcome:
        values: dict[str, Any] = {"name": rec.name, "locale": rec.locale}
        values["time_zone"] = rec.time_zone
        if rec.chase is not None:
            values["chase"] = rec.chase
        if rec.cadence is not None:
            if rec.cadence and self.cadences is not None and rec.cadence not in self.cadences:
                raise DocumentError(
                    f"{rec.where}.cadence",
                    f"unknown cadence {rec.cadence!r}; this tenant has "
                    f"{', '.join(sorted(self.cadences)) or 'none'}",
                )
            values["cadence"] = rec.cadence or None
        if rec.statements is not None:
            values["statement_schedule"] = rec.statements or None

        def rescheduled(row: Customer) -> None:
            if values.get("statement_schedule", row.statement_schedule) != row.statement_schedule:
                values["next_statement_at"] = None  # the statement pass schedules it anew

        upserted = self.upsert(Customer, rec.external_id, values, before_update=rescheduled)
        row, outcome = upserted.row, upserted.outcome
        self.session.flush()
        if rec.contacts is not None and self._sync_contacts(row, rec.contacts):
            outcome = "updated" if outcome == "unchanged" else outcome
        if outcome == "updated":
            row.updated_at = self.now
            # Zone, cadence, chase switch or contacts changed: the scheduler looks again.
            touch_customer_invoices(self.session, row_id(row), self.now)
        return outcome

    def _sync_contacts(self, customer: Customer, contacts: tuple[ParsedContact, ...]) -> bool:
        """Make the customer's contacts exactly the listed ones, matched by email.

        A clerk's correction (``Contact.erp_email``) stands in for the address it replaced while
        the ERP still lists that address, so a bounced address does not come back with the next
        import; it is reported in ``ImportReport.corrections_kept``, because the fix belongs in
        the ERP too. When the ERP lists the corrected address itself, or no longer lists the
        old one, the ERP has caught up and the correction is done.
        """
        existing = {
            c.email: c
            for c in self.session.exec(
                select(Contact).where(
                    col(Contact.tenant_id) == self.tenant_id,
                    col(Contact.customer_id) == customer.id,
                )
            )
        }
        listed = {parsed.email for parsed in contacts}
        standing_in = {
            c.erp_email: c for c in existing.values() if c.erp_email and c.email not in listed
        }
        changed = False
        for parsed in contacts:
            row = existing.pop(parsed.email, None)
            if row is None and (fix := standing_in.get(parsed.email)) is not None:
                row = existing.pop(fix.email, None)
                if row is not None:
                    self.corrections_kept.append(
                        KeptCorrection(customer.external_id, parsed.email, row.email)
                    )
            if row is None:
                row = Contact(
                    tenant_id=self.tenant_id, customer_id=row_id(customer), email=parsed.email
                )
                self.session.add(row)
                changed = True
            values: dict[str, Any] = {"name": parsed.name, "roles": [r.value for r in parsed.roles]}
            if row.email == parsed.email:  # the ERP lists this very address: nothing to stand in
                values.update(erp_email=None, corrected_by=None, corrected_at=None)
            if parsed.send_invoices is not None:
                values["send_invoices"] = parsed.send_invoices
            changed |= assign(row, **values)
        for gone in existing.values():  # the ERP no longer lists them: it is the source of truth
            self.session.delete(gone)
            changed = True
        return changed

    # -- invoices --------------------------------------------------------------------------

    def invoice(self, rec: ParsedInvoice) -> Outcome:
        customer = self.ref(Customer, rec.customer, f"{rec.where}.customer")
        clash = self.session.exec(
            select(Invoice).where(
                col(Invoice.tenant_id) == self.tenant_id,
                col(Invoice.number) == rec.number,
                col(Invoice.external_id) != rec.external_id,
            )
        ).first()
        if clash is not None:
            raise DocumentError(
                f"{rec.where}.number",
                f"number {rec.number!r} already belongs to invoice {clash.external_id!r}",
            )
        content: dict[str, Any] = {
            "customer_id": customer.id,
            "number": rec.number,
            "currency": rec.currency,
            "issued_at": rec.issued_at,
            "due_at": rec.due_at,
            "lines": [line.as_json() for line in rec.lines],
            "total_minor": rec.total_minor,
            "tax_minor": rec.tax_minor,
            "content_hash": rec.content_hash,
        }

        def same_currency(row: Invoice) -> None:
            if row.currency != rec.currency and self._allocated(row.id):
                raise DocumentError(
                    f"{rec.where}.currency",
                    "cannot change: payments or credit notes are allocated to this invoice",
                )

        upserted = self.upsert(
            Invoice,
            rec.external_id,
            content,
            new={"status": rec.status},
            versioned=True,
            before_update=same_currency,
        )
        row, outcome = upserted.row, upserted.outcome
        self._declared[row_id(row)] = rec.status
        balance = row.total_minor - self._allocated(row_id(row))
        if assign(row, balance_minor=balance, status=_settled(rec.status, balance)):
            outcome = "updated" if outcome == "unchanged" else outcome
        if outcome != "unchanged":
            row.updated_at = self.now
            row.next_action_at = self.now
        return outcome

    def _rebalance(self, invoice_ids: Iterable[int]) -> None:
        """Recompute balances after allocations changed; an open invoice at zero becomes paid.

        A paid invoice only re-opens when this document declared it open: the ledger cannot tell
        a "paid" the ERP sent (perhaps after a write-off) from one it derived itself.
        """
        self.session.flush()
        for invoice_id in set(invoice_ids):
            invoice = self.session.get_one(Invoice, invoice_id)
            balance = invoice.total_minor - self._allocated(invoice_id)
            declared = self._declared.get(invoice_id, invoice.status)
            status = invoice.status
            if (
                status in (InvoiceStatus.OPEN, InvoiceStatus.PAID)
                and declared is InvoiceStatus.OPEN
            ):
                status = _settled(declared, balance)
            elif status is InvoiceStatus.OPEN:
                status = _settled(status, balance)
            if assign(invoice, balance_minor=balance, status=status):
                invoice.updated_at = self.now
                invoice.next_action_at = self.now

    def _check_target(
        self, invoice: Invoice, *, customer: Customer, row: Payment | CreditNote, where: str
    ) -> None:
        """May ``row`` settle ``invoice``: same customer, same currency, and an invoice sent?"""
        currency = row.currency
        if invoice.customer_id != customer.id:
            raise DocumentError(
                where, f"invoice {invoice.external_id!r} belongs to another customer"
            )
        if invoice.currency != currency:
            raise DocumentError(
                where, f"invoice {invoice.external_id!r} is in {invoice.currency}, not {currency}"
            )
        if invoice.status in _UNPAYABLE:
            raise DocumentError(where, f"invoice {invoice.external_id!r} is {invoice.status.value}")

    def _allocate(
        self, invoice: Invoice, amount_minor: int, *, where: str, **owner: int | None
    ) -> None:
        open_minor = invoice.total_minor - self._allocated(invoice.id)
        if amount_minor > open_minor:
            cur = invoice.currency
            raise DocumentError(
                where,
                f"{from_minor(amount_minor, cur)} {cur} is more than the "
                f"{from_minor(max(open_minor, 0), cur)} {cur} still open on invoice "
                f"{invoice.external_id!r}",
            )
        self.session.add(
            PaymentAllocation(
                tenant_id=self.tenant_id,
                invoice_id=row_id(invoice),
                amount_minor=amount_minor,
                **owner,
            )
        )
        self.session.flush()

    # -- credit notes ----------------------------------------------------------------------

    def credit_note(self, rec: ParsedCreditNote) -> Outcome:
        customer = self.ref(Customer, rec.customer, f"{rec.where}.customer")
        wanted = []
        if rec.invoice is not None:
            at = f"{rec.where}.invoice"
            wanted.append(_Want(self.ref(Invoice, rec.invoice, at), rec.amount_minor, at, at))
        values: dict[str, Any] = {
            "customer_id": customer.id,
            "number": rec.number,
            "currency": rec.currency,
            "amount_minor": rec.amount_minor,
            "issued_at": rec.issued_at,
            "lines": [line.as_json() for line in rec.lines],
            "reason": rec.reason,
        }
        upserted = self.upsert(CreditNote, rec.external_id, values)
        row, created = upserted.row, upserted.created
        outcome = self._settle(upserted, wanted, customer=customer, credit_note_id=row.id)
        if outcome == "unchanged":
            return outcome
        if outcome == "updated":
            row.version += 1  # its PDF is a new document version
        invoice = wanted[0].invoice if wanted else None
        spec = EventSpec(
            kind=Kind.CREDIT_NOTE,
            key=f"credit_note:{row.external_id}",
            customer_id=row_id(customer),
            document=f"credit_note:{row_id(row)}",
            context=credit_note_context(row, invoice.number if invoice else None),
            # Like a new invoice: sent once the ERP has stopped editing it for a grace period.
            due_at=grace_ends(self.now, self.grace, issued_at=row.issued_at),
            version=row.version,
            invoice_id=row_id(invoice) if invoice else None,
            happened_at=row.issued_at,
        )
        self.events.announce(spec, new=created, restart=True)
        return outcome

    # -- payments --------------------------------------------------------------------------

    def payment(self, rec: ParsedPayment) -> Outcome:
        customer = self.ref(Customer, rec.customer, f"{rec.where}.customer")
        wanted = [
            _Want(
                self.ref(Invoice, a.invoice, f"{a.where}.invoice"),
                a.amount_minor,
                f"{a.where}.invoice",
                f"{a.where}.amount",
            )
            for a in rec.allocations
        ]
        values: dict[str, Any] = {
            "customer_id": customer.id,
            "amount_minor": rec.amount_minor,
            "currency": rec.currency,
            "received_at": rec.received_at,
            "method": rec.method,
            "receipt_number": rec.receipt_number,
        }
        upserted = self.upsert(Payment, rec.external_id, values)
        row, created = upserted.row, upserted.created
        outcome = self._settle(upserted, wanted, customer=customer, payment_id=row.id)
        if outcome == "unchanged":
            return outcome
        only = wanted[0].invoice if len(wanted) == 1 else None
        spec = EventSpec(
            kind=Kind.PAYMENT_RECEIPT,
            key=f"payment:{row.external_id}",
            customer_id=row_id(customer),
            document=f"payment:{row_id(row)}",
            context=payment_context(row, [(w.invoice, w.amount_minor) for w in wanted]),
            due_at=self.now,  # a receipt goes at once
            invoice_id=row_id(only) if only else None,
            happened_at=row.received_at,
        )
        self.events.announce(spec, new=created)
        return outcome

    def _settle(
        self,
        upserted: Upserted[Payment] | Upserted[CreditNote],
        wanted: list[_Want],
        *,
        customer: Customer,
        **owner: int | None,
    ) -> Outcome:
        """Replace the allocations of a payment or credit note just upserted with ``wanted``.

        Nothing is checked when nothing changed, so re-importing a payment whose invoice was
        voided since stays "unchanged" instead of failing on data the ledger already holds.
        """
        old = self._allocations(**owner)
        same = sorted((a.invoice_id, a.amount_minor) for a in old) == sorted(
            (row_id(w.invoice), w.amount_minor) for w in wanted
        )
        row = upserted.row
        if upserted.outcome == "unchanged" and same:
            return "unchanged"
        for want in wanted:
            self._check_target(want.invoice, customer=customer, row=row, where=want.invoice_where)
        if not same:
            touched = self._release(old)  # allocations are replaced wholesale on re-import
            for want in wanted:
                self._allocate(want.invoice, want.amount_minor, where=want.amount_where, **owner)
                touched.append(row_id(want.invoice))
            self._rebalance(i for i in touched if i is not None)
        return "created" if upserted.created else "updated"

    def _release(self, allocations: list[PaymentAllocation]) -> list[int | None]:
        for allocation in allocations:
            self.session.delete(allocation)
        self.session.flush()
        return [a.invoice_id for a in allocations]


def _settled(status: InvoiceStatus, balance_minor: int) -> InvoiceStatus:
    """An open invoice with nothing left to pay is paid; draft, void and paid stay as they are."""
    if status is InvoiceStatus.OPEN and balance_minor <= 0:
        return InvoiceStatus.PAID
    return status


# -- queries the CLI and the scheduler use ---------------------------------------------------


def find_invoice(session: Session, *, tenant_id: int, number: str) -> Invoice:
    """The tenant's invoice with this number (as printed on it, not the ERP id)."""
    invoice = session.exec(
        select(Invoice).where(col(Invoice.tenant_id) == tenant_id, col(Invoice.number) == number)
    ).first()
    if invoice is None:
        raise NotFoundError(f"no invoice numbered {number!r}")
    return invoice


def invoice_contacts(
    session: Session, invoice: Invoice, *, now: datetime | None = None
) -> list[Contact]:
    """Who receives ``invoice``: its customer's contacts (:func:`customer_contacts`)."""
    return contacts_by_customer(session, [invoice.customer_id], now=now)[invoice.customer_id]


def customer_contacts(
    session: Session, customer: Customer, *, now: datetime | None = None
) -> list[Contact]:
    """Who receives a customer's AR email: its contacts with send_invoices on.

    Ordered billing, ap, accountant, primary (a contact ranks by its best role; none ranks
    last), then by email, so the first address is the one a single-recipient send should use.
    Given ``now``, suppressed addresses are left out, and when that leaves nobody, the
    best-ranked other contact who is not suppressed stands in (a bounced AP mailbox passes the
    reminder to the accountant rather than to nobody).
    """
    cid = customer.id or 0
    return contacts_by_customer(session, [cid], now=now)[cid]


def contacts_by_customer(
    session: Session, customer_ids: Iterable[int], *, now: datetime | None = None
) -> dict[int, list[Contact]]:
    """:func:`customer_contacts` of many customers in one query (the scheduler's batches)."""
    # By customer alone: a customer id is unique across tenants, and a tenant_id condition
    # invites SQLite (without statistics) to scan all of the tenant's contacts instead.
    wanted = sorted(set(customer_ids))
    everyone: dict[int, list[Contact]] = {c: [] for c in wanted}
    if not wanted:
        return everyone
    query = select(Contact).where(col(Contact.customer_id).in_(wanted))
    if now is None:
        query = query.where(col(Contact.send_invoices).is_(True))
    for contact in session.exec(query).all():
        everyone[contact.customer_id].append(contact)
    ranked = {c: rank_contacts(rows) for c, rows in everyone.items()}
    if now is None:
        return ranked
    contacts = [c for rows in ranked.values() for c in rows]
    blocked = set(
        active_suppressions(
            session, {c.tenant_id for c in contacts}, {c.email for c in contacts}, now
        )
    )
    return {cid: deliverable(rows, blocked) for cid, rows in ranked.items()}


def deliverable(ranked: list[Contact], blocked: Collection[tuple[int, str]]) -> list[Contact]:
    """The send_invoices contacts that are not blocked; if all of those are blocked, the
    best-ranked other contact that is not (the fallback by role); else nobody. A customer
    whose contacts all opted out of AR email gets none."""
    open_ = [c for c in ranked if (c.tenant_id, normal(c.email)) not in blocked]
    chosen = [c for c in open_ if c.send_invoices]
    if chosen or not any(c.send_invoices for c in ranked):
        return chosen
    return open_[:1]


def rank_contacts(contacts: Iterable[Contact]) -> list[Contact]:
    """Billing, AP, accountant, primary (a contact ranks by its best role; none ranks last),
    then by email."""
    return sorted(contacts, key=_rank)


def _rank(contact: Contact) -> tuple[int, str]:
    best = min(
        (ROLE_PRIORITY.index(ContactRole(r)) for r in contact.roles if r in ROLE_PRIORITY),
        default=len(ROLE_PRIORITY),
    )
    return best, contact.email


def replace_contact_email(
    session: Session,
    *,
    tenant_id: int,
    customer_id: int,
    old: str,
    new: str,
    now: datetime,
    by: str,
) -> Contact:
    """Correct one contact's address by hand (the AR inbox's "fix the contact" after every
    address bounced): the same contact, name and roles, at ``new``. The caller commits.

    The row remembers the ERP's address (``erp_email``): an import that still lists it keeps
    the correction and says so in its report, until the ERP is fixed too.
    """
    address = parse_addr_spec(new.strip())
    contacts = {
        c.email: c
        for c in session.exec(
            select(Contact).where(
                col(Contact.tenant_id) == tenant_id, col(Contact.customer_id) == customer_id
            )
        )
    }
    row = contacts.get(old)
    if row is None:
        raise NotFoundError(f"the customer has no contact {old!r}")
    if address != old and address in contacts:
        raise DocumentError("new address", f"the customer already has a contact {address}")
    erp_email = row.erp_email or row.email
    row.email = address
    if address == erp_email:  # corrected back to what the ERP says: nothing stands in
        row.erp_email, row.corrected_by, row.corrected_at = None, None, None
    else:
        row.erp_email, row.corrected_by, row.corrected_at = erp_email, by[:200], now
    session.add(row)
    session.flush()
    touch_customer_invoices(session, customer_id, now)  # the scheduler looks again
    return row
