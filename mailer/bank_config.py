"""The tenant's bank account (``[tenants.<slug>.bank]``): where customers pay by transfer.

IBAN and BIC are checked by schwifty (ISO 13616 check digits, the country's length and bank
code, the BIC's structure and country), so a typo stops the config
from loading, naming ``tenants.<slug>.bank.iban``, instead of printing a wrong account on every
invoice. Both are kept compact (``DE89370400440532013000``); statements are matched against it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException


class BankConfig(BaseModel):
    """The account a tenant's customers pay into, as printed on its invoices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iban: str
    bic: str | None = None  # optional inside SEPA
    account_name: Annotated[str, Field(min_length=1, max_length=140)] | None = None

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str) -> str:
        try:
            return str(IBAN(value).compact)
        except SchwiftyException as exc:
            raise ValueError(f"{value[:40]!r} is not a valid IBAN: {exc}") from None

    @field_validator("bic")
    @classmethod
    def _bic(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(BIC(value).compact)
        except SchwiftyException as exc:
            raise ValueError(f"{value[:20]!r} is not a valid BIC: {exc}") from None
