"""The content room's tables: rendered PDFs kept per document version, tenants' template
overrides.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from mailer.columns import at_column


class StoredPDF(SQLModel, table=True):
    """A rendered PDF of one immutable document version, kept so it is rendered only once.

    ``document`` names the document (``"invoice:42"``) and ``version`` its version; ``render_key``
    (:func:`mailer.content.pdf.render_key`) covers everything else that decides the bytes (context,
    templates, WeasyPrint), so a deploy that changes the output renders anew.
    """

    __table_args__ = (sa.UniqueConstraint("tenant_id", "document", "version", "render_key"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    document: str = Field(max_length=100)
    version: int
    render_key: str = Field(max_length=64)
    sha256: str = Field(max_length=64, index=True)
    pages: int
    data: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))
    created_at: datetime = at_column()


class TemplateOverride(SQLModel, table=True):
    """A tenant's own source for one part (subject, text, html) of one email kind.

    Saved only after :func:`mailer.content.overrides.validate_override` accepted it, so a broken
    template is refused when it is saved, never discovered when an email is sent.
    """

    __table_args__ = (sa.UniqueConstraint("tenant_id", "kind", "part"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    kind: str = Field(max_length=63)
    part: str = Field(max_length=10)
    source: str = Field(sa_column=Column(sa.Text, nullable=False))
    updated_at: datetime = at_column()
    updated_by: str = Field(max_length=200)
