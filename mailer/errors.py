"""The MailerError hierarchy: one place for every error the engine raises on purpose."""

from __future__ import annotations


class MailerError(Exception):
    """Root of every error dunmail raises deliberately."""


class ConfigError(MailerError, ValueError):
    """The configuration is missing, malformed or unsafe; the message says which key."""


class TemplateError(MailerError):
    """A template does not compile, names an unknown variable or is missing."""


class HeaderInjectionError(MailerError, ValueError):
    """A header value built from data contains CR or LF (RFC 5322 s2.2 header folding abuse)."""


class AddressError(MailerError, ValueError):
    """An email address does not parse as an RFC 5322 addr-spec."""


class LinkError(MailerError):
    """A signed link or VERP token failed verification."""


class LinkExpired(LinkError):
    """The token was genuine but is past its expiry."""


class LinkInvalid(LinkError):
    """The token was tampered with, truncated or signed with an unknown key."""


class DocumentError(MailerError, ValueError):
    """An imported record is invalid; ``where`` names its position in the document."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class NotFoundError(MailerError, LookupError):
    """A named invoice, customer or message does not exist for this tenant."""


class DeliveryError(MailerError):
    """The mail server refused or could not take the message.

    Like aiosmtplib's ``SMTPResponseException`` it keeps the reply ``code`` and ``message``,
    and ``recipient`` when the failure concerns one recipient only.
    """

    def __init__(self, code: int, message: str, recipient: str | None = None) -> None:
        super().__init__(f"{code} {message}" + (f" ({recipient})" if recipient else ""))
        self.code = code
        self.message = message
        self.recipient = recipient


class TransientDeliveryError(DeliveryError):
    """A 4xx reply, a timeout or a dropped connection: try again later (RFC 5321 s4.2.1)."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply: retrying cannot help (RFC 5321 s4.2.1)."""


class PDFPending(MailerError):
    """A message's PDF is still rendering, off the delivery pass (mailer/content/pdfstore.py): the
    email is not attempted now but looked at again after ``retry_after`` seconds, so one slow
    document never holds the pass (and every other tenant's mail) while it renders."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BusyError(MailerError):
    """The work cannot start now because other work holds what it needs (another import of
    the tenant, a database locked past its busy timeout or not answering): nothing was changed
    by the refused attempt, and trying again later is the remedy (the CLI's exit 3)."""
