"""SERVICE: upsert imports into the ledger, allocate payments, settle invoices, record events."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from mailer.errors import DocumentError, NotFoundError
from mailer.ledger.agreements import AgreementImport
from mailer.ledger.billing import BillingImport
from mailer.ledger.contacts import KeptCorrection
from mailer.ledger.documents import MAX_LINES, SECTIONS, parse_document
from mailer.ledger.models import (
    Tenant,
)
from mailer.ledger.parsed import (
    ParsedAutopayFailure,
    ParsedCreditNote,
    ParsedCustomer,
    ParsedEstimate,
    ParsedInvoice,
    ParsedPayment,
    ParsedPaymentPlan,
    ParsedRefund,
    ParsedSubscription,
)
from mailer.ledger.receivables import LedgerImport
from mailer.ledger.upsert import Outcome

log = logging.getLogger(__name__)

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
    importer = LedgerImport(
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
    importer: LedgerImport,
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
