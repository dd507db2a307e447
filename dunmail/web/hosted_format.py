"""PURE: how the hosted document page writes its words, amounts and dates for one customer.

Amounts and dates go through the emails' own Babel formatters in the customer's locale, and every
date is the customer's local day (``mailer.ledger.localtime``); the words come from the customer-
facing pages' ``portal`` catalog, in the language the email was written in
(``dunmail.portal_words.email_words``). ``python -m dunmail.portal_words`` extracts every
``fmt.gettext``/``fmt.ngettext`` of ``dunmail/web/hosted.py``.
"""

from __future__ import annotations

from gettext import NullTranslations

from mailer.content.formatting import format_day, format_money, normalise_locale
from mailer.ledger.localtime import DEFAULT_ZONE, local_date


class PageFormat:
    """Money and dates in the customer's locale, the way the emails format them; dates are the
    day it is in the customer's zone (``time_zone``; UTC for an email queued without one);
    words in ``words`` (English, the message ids, without a catalog)."""

    def __init__(self, locale: object, zone: object, words: NullTranslations) -> None:
        self.locale = normalise_locale(locale if isinstance(locale, str) else None)
        self.zone = zone if isinstance(zone, str) and zone else DEFAULT_ZONE
        self.words = words

    def gettext(self, message: str, **values: object) -> str:
        """``message`` translated, its ``%(name)s`` placeholders filled with ``values``."""
        text = self.words.gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: object) -> str:
        """The plural form for ``n`` translated, ``%(num)d`` and ``values`` filled in."""
        return self.words.ngettext(singular, plural, n) % {"num": n, **values}

    def money(self, amount_minor: object, currency: object) -> str:
        """An amount in minor units as the customer's locale writes it; "" for junk."""
        if not isinstance(amount_minor, int) or not isinstance(currency, str):
            return ""
        return format_money(amount_minor, currency, self.locale)

    def day(self, value: object) -> str:
        """An ISO instant as the customer's local day, medium format; "" for none."""
        if not isinstance(value, str) or not value:
            return ""
        return format_day(local_date(value, self.zone), "medium", self.locale)
