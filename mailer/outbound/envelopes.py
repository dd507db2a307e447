"""SERVICE: one SMTP transaction per recipient, so each carries its own VERP return path.

A bounce comes back to the envelope sender of the transaction it belongs to (RFC 5321 s4.5.5).
With one envelope for all recipients, the return path proves the message but not *whom* the
bounce is about, and a DSN to a shared return path naming another recipient suppressed that
other recipient. So every recipient gets its own transaction, MAIL FROM and token
(mailer/outbound/verp.py); the message bytes, Message-ID and DKIM signature are the same in each.

The transactions' replies are folded into one :class:`SendResult`, one entry per recipient,
so the outbox's per-recipient bookkeeping (mailer/outbound/delivery.py) is unchanged: a recipient
that
accepted is never sent to again, whatever happened to the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mailer.errors import DeliveryError, TransientDeliveryError
from mailer.outbound.transport import RecipientResult, SendResult, Transport

log = logging.getLogger(__name__)


async def send_each(
    transport: Transport, message: bytes, *, envelopes: Sequence[tuple[str, str]]
) -> SendResult:
    """Send ``message`` once per ``(recipient, return path)``, in order, on ``transport``.

    A failure of the first transaction (nothing delivered yet) raises as a single send
    would, so the outbox's whole-attempt handling (back-off, the too-big retry with a link)
    sees it unchanged. Once anything happened, a failure belongs to its recipient: a
    permanent one rejects that recipient and the others go on; a temporary one (the
    connection lost, a 421) defers it and every recipient not yet tried, since the server
    is unlikely to take them now. They are retried later, never the ones that accepted.
    """
    results: list[RecipientResult] = []
    data_reply: tuple[int, str] | None = None
    for index, (recipient, sender) in enumerate(envelopes):
        try:
            one = await transport.send(message, sender=sender, recipients=[recipient])
        except DeliveryError as exc:
            if not results:
                raise
            results.append(_refusal(recipient, exc))
            if isinstance(exc, TransientDeliveryError):
                why = f"4.4.0 not tried: an earlier transaction failed ({exc.message[:200]})"
                results += [RecipientResult(r, 451, why) for r, _ in envelopes[index + 1 :]]
                log.info(
                    "%s: deferring %d recipient(s) after %s",
                    transport.key,
                    len(envelopes) - index - 1,
                    exc,
                )
                break
            continue
        results.extend(one.recipients)
        if one.code is not None and data_reply is None:
            data_reply = (one.code, one.message)
    code, text = data_reply if data_reply is not None else (None, "")
    return SendResult(tuple(results), code, text, transport.key)


def _refusal(recipient: str, exc: DeliveryError) -> RecipientResult:
    """A failed transaction as its one recipient's refusal, keeping 4xx (retry) apart from
    5xx (final): a code outside its class (0: no reply at all) takes the class's default."""
    if isinstance(exc, TransientDeliveryError):
        code = exc.code if 400 <= exc.code < 500 else 451
    else:
        code = exc.code if 500 <= exc.code < 600 else 554
    return RecipientResult(recipient, code, exc.message)
