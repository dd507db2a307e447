"""PURE: the AR team's copies of a customer email, as recipient rows beside the customer's.

A tenant's ``cc`` / ``bcc`` (``mailer/tenant_config.py``, per kind under ``emails.<kind>``) are
added when an email is queued, each as a :class:`~mailer.outbound.models.MessageRecipient` with
its :class:`~mailer.outbound.models.RecipientRole`. So each copy has its own transaction, VERP
return path and recorded result like any recipient (mailer/outbound/envelopes.py), and:

* only ``to`` rows decide the customer's email (mailer/outbound/delivery.py): a refused copy
  never fails it, and a copy that took it never makes a refused customer's email "sent";
* a bounce names the copy's address, never the customer's contact (bounce/recovery.py reads
  only ``to`` rows to tell whether the customer was reached);
* ``cc`` rows are in the Cc header of every copy; ``bcc`` rows are in no header at all, only in
  their own envelope (RFC 5322 s3.6.3 leaves the Bcc field out of what others receive);
* a suppressed copy address is skipped at pre-flight as any suppressed recipient is.

The copies are not part of the idempotency key: changing the AR team's addresses never makes
the same customer email a second message.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailer.address import parse_addr_spec
from mailer.outbound.models import RecipientRole


def plan_recipients(
    to: Iterable[str], cc: Iterable[str] = (), bcc: Iterable[str] = ()
) -> list[tuple[str, RecipientRole]]:
    """Each address once, with its role: the customer's first (sorted), then the copies; an
    address that is already a customer recipient (or a cc) is not copied again."""
    rows = [(a, RecipientRole.TO) for a in sorted({parse_addr_spec(a) for a in to})]
    seen = {a.lower() for a, _ in rows}
    for addresses, role in ((cc, RecipientRole.CC), (bcc, RecipientRole.BCC)):
        for address in addresses:
            spec = parse_addr_spec(address)
            if spec.lower() not in seen:
                seen.add(spec.lower())
                rows.append((spec, role))
    return rows
