"""PURE: what one bank statement line pays, decided from the line and what the ledger holds.

By reference first: an invoice's RF reference pays that invoice, a customer's pays its open
invoices oldest first, and several references (two invoices in one transfer) are paid in the
order written. Without one, by amount and customer: the debtor's IBAN (seen on an earlier
matched line) or name picks the customer, and the amount must equal one open invoice or two
together. What is paid beyond the invoices is a credit on the customer's account; less leaves
the invoice open with its balance. Money is never matched across currencies, and money out (a
returned transfer, a reversal) is never matched at all: both go to a clerk with the reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from difflib import get_close_matches
from itertools import combinations

from mailer.ledger.bank_models import BankLineStatus, Confidence
from mailer.ledger.bank_statement import Direction, StatementLine
from mailer.ledger.money import from_minor
from mailer.ledger.references import (
    Reference,
    ReferenceError,
    ReferenceKind,
    parse_reference,
    scan_references,
)

# Words that say what kind of company it is, not which: "Globex B.V." pays for "Globex".
_LEGAL = frozenset(
    "ag bv co corp gmbh inc kg llc llp ltd limited nv oy plc sa sarl sas spa srl ab as".split()
)
_SIMILAR = 0.85  # difflib ratio of two name keys from which a name is "similar" (low confidence)


@dataclass(frozen=True)
class InvoiceView:
    """What matching needs of an invoice."""

    id: int
    customer_id: int
    number: str
    currency: str
    balance_minor: int
    status: str  # InvoiceStatus value
    due_at: datetime


@dataclass(frozen=True)
class CustomerView:
    id: int
    name: str


@dataclass(frozen=True)
class MatchContext:
    """The ledger around one line, loaded by the service: the invoices its references name,
    the open invoices of the customers it may be from, and how each such customer was found."""

    tenant_id: int
    invoices: Mapping[int, InvoiceView] = field(default_factory=dict)
    customers: Mapping[int, CustomerView] = field(default_factory=dict)
    by_iban: frozenset[int] = frozenset()  # customers an earlier matched line of this IBAN paid
    by_name: frozenset[int] = frozenset()  # customers whose name is the debtor's
    similar_name: frozenset[int] = frozenset()  # customers with a name like the debtor's


@dataclass(frozen=True)
class Decision:
    """What becomes of a line: a payment of ``allocations`` (invoice id, amount) plus a credit
    on account, or a place in the clerk's queue, with the reason in words either way."""

    status: BankLineStatus
    reason: str
    customer_id: int | None = None
    allocations: tuple[tuple[int, int], ...] = ()
    credit_minor: int = 0
    confidence: Confidence | None = None
    reference: str | None = None


def name_key(name: str) -> str:
    """A company name compared without case, accents, punctuation or legal form."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()
    words = [w for w in re.split(r"[^a-z0-9]+", plain.replace(".", "")) if w]
    kept = [w for w in words if w not in _LEGAL]
    return " ".join(kept or words)


def similar_keys(key: str, keys: Collection[str]) -> list[str]:
    """Name keys alike enough to suggest, never to apply: one contains the other ("globex"
    in "globex europe"), or difflib finds them close (a typo). ``get_close_matches`` rules
    most keys out by its quick upper bounds before the costly ratio."""
    if len(key) < 3:
        return []
    close = get_close_matches(key, keys, n=5, cutoff=_SIMILAR)
    contained = [k for k in keys if len(k) >= 3 and (k in key or key in k)]
    return list(dict.fromkeys([*close, *contained[:5]]))


def references_of(line: StatementLine) -> tuple[list[Reference], list[str]]:
    """Our references in the line (structured first, then the free text), and each structured
    one that is not ours or not valid, in words."""
    found: list[Reference] = []
    bad: list[str] = []
    for text in line.references:
        try:
            found.append(parse_reference(text))
        except ReferenceError as exc:
            bad.append(str(exc))
    in_text, unreadable = scan_references(line.remittance)
    found.extend(in_text)
    bad.extend(f"{text} is not a valid RF reference of ours" for text in unreadable)
    return list(dict.fromkeys(found)), bad


def plan_match(line: StatementLine, ctx: MatchContext) -> Decision:
    """Decide what ``line`` pays (module docstring); never touches the ledger."""
    if line.direction is Direction.DEBIT or line.reversal:
        if line.reversal or line.return_reason:
            why = f" ({line.return_reason})" if line.return_reason else ""
            return Decision(BankLineStatus.UNMATCHED, f"returned transfer or reversal{why}")
        return Decision(BankLineStatus.IGNORED, "money out: not a customer's payment")
    refs, bad = references_of(line)
    foreign = [r for r in refs if r.tenant_id != ctx.tenant_id]
    ours = [r for r in refs if r.tenant_id == ctx.tenant_id]
    if foreign:
        bad.append(f"{foreign[0].text} is another tenant's reference")
    if ours:
        return _by_reference(line, ours, ctx)
    decided = _by_amount(line, ctx)
    if bad and decided.status is not BankLineStatus.MATCHED:
        return Decision(
            BankLineStatus.UNMATCHED,
            _clip(f"wrong reference: {'; '.join(bad)}. {decided.reason}"),
            decided.customer_id,
            confidence=decided.confidence,
        )
    return decided


def _by_reference(line: StatementLine, refs: Sequence[Reference], ctx: MatchContext) -> Decision:
    targets: list[InvoiceView] = []
    customers: set[int] = set()
    for ref in refs:
        if ref.kind is ReferenceKind.INVOICE:
            invoice = ctx.invoices.get(ref.id)
            if invoice is None:
                return _unmatched(f"reference {ref.text} names no invoice of this tenant")
            if invoice.currency != line.currency:
                return _foreign(line, invoice)
            if invoice.status != "open" or invoice.balance_minor <= 0:
                return _unmatched(
                    f"reference {ref.text}: invoice {invoice.number} is {invoice.status}, "
                    "nothing left to pay",
                    invoice.customer_id,
                )
            customers.add(invoice.customer_id)
            targets.append(invoice)
        else:
            if ref.id not in ctx.customers:
                return _unmatched(f"reference {ref.text} names no customer of this tenant")
            customers.add(ref.id)
            open_ = _open_of(ctx, ref.id)
            same = [i for i in open_ if i.currency == line.currency]
            if open_ and not same:
                return _foreign(line, open_[0])
            targets.extend(same)
    if len(customers) > 1:
        return _unmatched("the references name invoices of more than one customer")
    (customer_id,) = customers
    allocations, credit = _allocate(line.amount_minor, targets)
    numbers = ", ".join(ctx.invoices[i].number for i, _ in allocations) or "no open invoice"
    reason = f"by reference {', '.join(r.text for r in refs)} ({numbers})"
    return Decision(
        BankLineStatus.MATCHED,
        _clip(reason + _credit_note(credit, line.currency)),
        customer_id,
        allocations,
        credit,
        Confidence.HIGH,
        refs[0].text,
    )


def _by_amount(line: StatementLine, ctx: MatchContext) -> Decision:
    strong = ctx.by_iban | ctx.by_name
    candidates = sorted(strong) or sorted(ctx.similar_name)  # similar: only if none surer
    found: list[tuple[int, tuple[InvoiceView, ...], bool]] = []
    other_currency: InvoiceView | None = None
    for customer_id in candidates:
        open_ = _open_of(ctx, customer_id)
        same = [i for i in open_ if i.currency == line.currency]
        singles = [(i,) for i in same if i.balance_minor == line.amount_minor]
        pairs = [
            p for p in combinations(same, 2) if sum(i.balance_minor for i in p) == line.amount_minor
        ]
        if singles or pairs:
            found.extend((customer_id, m, len(singles) == 1) for m in (singles or pairs))
        elif other_currency is None:
            other_currency = next((i for i in open_ if i.currency != line.currency), other_currency)
    if not found:
        if other_currency is not None:
            return _foreign(line, other_currency)
        who = "an unknown debtor" if not candidates else "the debtor's customer"
        return _unmatched(
            f"no reference, and no open invoice of {who} for "
            f"{from_minor(line.amount_minor, line.currency)} {line.currency}",
            candidates[0] if len(candidates) == 1 else None,
        )
    customer_id, invoices, unique = found[0]
    one_customer = len({c for c, _, _ in found}) == 1
    if customer_id not in strong or not one_customer or len(invoices) == 2 and len(found) > 1:
        confidence = Confidence.LOW
    elif len(invoices) == 1 and unique and customer_id in ctx.by_iban | ctx.by_name:
        confidence = Confidence.HIGH
    else:
        confidence = Confidence.MEDIUM
    numbers = " + ".join(i.number for i in invoices)
    how = "known IBAN" if customer_id in ctx.by_iban else "name"
    if confidence is Confidence.LOW:
        name = ctx.customers[customer_id].name
        return Decision(
            BankLineStatus.UNMATCHED,
            _clip(f"suggested, low confidence: {numbers} of {name} (amount and {how} alike)"),
            customer_id,
            confidence=confidence,
        )
    allocations, credit = _allocate(line.amount_minor, list(invoices))
    return Decision(
        BankLineStatus.MATCHED,
        f"by amount and {how} ({numbers})",
        customer_id,
        allocations,
        credit,
        confidence,
    )


def _open_of(ctx: MatchContext, customer_id: int) -> list[InvoiceView]:
    """A customer's open invoices with something left to pay, oldest due first."""
    return sorted(
        (
            i
            for i in ctx.invoices.values()
            if i.customer_id == customer_id and i.status == "open" and i.balance_minor > 0
        ),
        key=lambda i: (i.due_at, i.id),
    )


def _allocate(
    amount: int, invoices: Sequence[InvoiceView]
) -> tuple[tuple[tuple[int, int], ...], int]:
    """Each invoice in turn gets what it still needs; the rest is credit on account."""
    left, out = amount, []
    for invoice in invoices:
        take = min(left, invoice.balance_minor)
        if take > 0:
            out.append((invoice.id, take))
            left -= take
    return tuple(out), left


def _foreign(line: StatementLine, invoice: InvoiceView) -> Decision:
    return _unmatched(
        f"foreign currency: a {line.currency} transfer, invoice {invoice.number} is in "
        f"{invoice.currency} (never matched across currencies)",
        invoice.customer_id,
    )


def _unmatched(reason: str, customer_id: int | None = None) -> Decision:
    return Decision(BankLineStatus.UNMATCHED, _clip(reason), customer_id)


def _credit_note(credit: int, currency: str) -> str:
    return f"; {from_minor(credit, currency)} {currency} left on account" if credit else ""


def _clip(text: str) -> str:
    return text if len(text) <= 300 else text[:299] + "…"
