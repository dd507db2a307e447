"""The PDF attachments' part of the services: the store, its renderer, and their lifecycle.

One part of :class:`dunmail.app.Services`. WeasyPrint is imported only when PDFs are switched
on, so a config without PDFs has no store, no renderer and starts no process pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.content.pdfstore import PDFRendering, PDFStore


@dataclass(frozen=True)
class Pdfs:
    """The stored PDFs (None: PDFs are off), the renderer behind them, and the delivery
    passes' view of the store."""

    pass_wait_seconds: float  # ``[pdf] pass_wait_seconds``: what :meth:`start` sets
    store: PDFStore | None = None
    renderer: PDFRendering | None = None  # closed with the services when it has close()
    passes: PDFStore | None = None  # the outbox's view of ``store`` (see :meth:`start`)

    async def start(self, *, warm: bool = True) -> None:
        """For ``dunmail run``: warm the PDF workers now (unless ``warm`` is False: a delivery
        worker's start on its first render), and let each delivery pass wait at most
        ``[pdf] pass_wait_seconds`` for a PDF; a slower one finishes rendering off the pass and
        its email goes at a later pass, so no tenant's document holds up the others.
        One-shot commands keep waiting for their PDFs: nothing would finish a render after
        they exit."""
        start = getattr(self.renderer, "start", None)
        if start is not None and warm:
            await start()
        if self.passes is not None:
            self.passes.pass_wait = self.pass_wait_seconds

    async def close(self) -> None:
        """Stop the renderer's workers, if it has any."""
        close = getattr(self.renderer, "close", None)
        if close is not None:
            await close()
