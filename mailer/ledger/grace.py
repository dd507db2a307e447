"""PURE: the grace period, the one rule for when an automatic email about a document may go.

An ERP often issues a document and edits it again within minutes; a person may also send or
mark it sent by hand. So the automatic email waits ``grace`` after the document's last edit,
and never goes before the document's own issue date (a future-dated invoice waits for its day).
The scheduler (new invoices) and the import (estimates, payment plans, credit notes' events)
both ask this one function, so the rule cannot drift between them.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def grace_ends(
    last_edit: datetime, grace: timedelta, *, issued_at: datetime | None = None
) -> datetime:
    """When the email may go: ``grace`` after ``last_edit``, and not before ``issued_at``."""
    ready = last_edit + grace
    return ready if issued_at is None else max(issued_at, ready)
