"""The account page's "Questions about an invoice" section, as text for its template: read
through ``dunmail/services/queries.py`` (:func:`read_section`), worded by the pure
:func:`build_section`.

Reasons, states and who wrote each step are the ``portal`` gettext domain's words
(``words.gettext`` here; ``dunmail/portal_words.py`` extracts them); dates are the customer's
local days in the locale of their emails, as on the rest of the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from gettext import NullTranslations

from dunmail.app import Services
from dunmail.portal_words import words_for
from dunmail.services.portal import Account
from dunmail.services.queries import QueryView, customer_queries
from dunmail.web.link_service import Opened
from mailer.content.formatting import format_day
from mailer.ledger.localtime import local_date


@dataclass(frozen=True)
class StepRow:
    kind: str  # "message", "answer", "resolved": also its CSS class
    who: str
    when: str
    reason: str | None
    text: str
    files: list[str]  # the attached files' names


@dataclass(frozen=True)
class QueryBlock:
    id: int
    invoice_number: str
    reason: str
    status: str  # "open" or "resolved"
    state: str  # in words
    steps: list[StepRow]


@dataclass(frozen=True)
class QuerySection:
    invoices: list[tuple[int, str]]  # the invoices a query can be raised on: id, number
    reasons: list[tuple[str, str]]  # value, words
    queries: list[QueryBlock]


def reason_words(words: NullTranslations) -> dict[str, str]:
    """Each reason's words in the customer's language, in the order the form offers them."""
    return {
        "wrong_amount": words.gettext("The amount is wrong"),
        "not_received": words.gettext("I did not receive the goods or service"),
        "already_paid": words.gettext("I have already paid"),
        "other": words.gettext("Something else"),
    }


def build_section(
    account: Account, queries: Sequence[QueryView], *, words: NullTranslations
) -> QuerySection:
    """The section of ``account`` with its ``queries``, newest first."""
    reasons = reason_words(words)
    states = {
        "open": words.gettext("Waiting for our answer; reminders are paused"),
        "resolved": words.gettext("Resolved"),
    }
    blocks = []
    for query in queries:
        steps = []
        for step in query.steps:
            who = {
                "message": words.gettext("You"),
                "answer": words.gettext("%(name)s (accounts team)") % {"name": account.tenant_name},
                "resolved": account.tenant_name,
            }.get(step.kind, step.kind)
            steps.append(
                StepRow(
                    kind=step.kind,
                    who=who,
                    when=format_day(
                        local_date(step.at, account.time_zone), "medium", account.locale
                    ),
                    reason=reasons.get(step.reason or "") if step.kind == "message" else None,
                    text=step.text
                    if step.kind != "resolved"
                    else words.gettext(
                        "We resolved this query. Reminders resume if the invoice is still open."
                    ),
                    files=[name for _, name, _, _ in step.files],
                )
            )
        blocks.append(
            QueryBlock(
                id=query.id,
                invoice_number=query.invoice_number,
                reason=reasons.get(query.reason, query.reason),
                status=query.status,
                state=states.get(query.status, query.status),
                steps=steps,
            )
        )
    return QuerySection(
        invoices=[(i.id, i.number) for i in account.invoices],
        reasons=list(reasons.items()),
        queries=blocks,
    )


def read_section(services: Services, opened: Opened, account: Account) -> QuerySection:
    """The section of the link's account: its form's choices and the customer's queries."""
    found = customer_queries(services, opened) or []
    return build_section(account, found, words=words_for(account.locale))
