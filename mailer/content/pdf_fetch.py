"""EDGE: the URL fetcher a PDF render is given: the assets registered for that render, nothing else.

Everything WeasyPrint loads (the tenant's logo, our fonts, any url() in tenant CSS) goes through
:class:`SafeFetcher`, so this module is the whole answer to "what can a PDF reach": ``asset:``
names handed in by the caller, never the network, the server's files or ``data:`` URIs.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Mapping
from urllib import request

from weasyprint.urls import URLFetcher, URLFetcherResponse

from mailer.content.pdf_html import PDFError

log = logging.getLogger(__name__)

ASSET_SCHEME = "asset:"
MAX_ASSET_BYTES = 2 * 1024 * 1024  # a logo; far above any sane one, far below a memory problem


class SafeFetcher(URLFetcher):  # type: ignore[misc]  # weasyprint ships no type information
    """A WeasyPrint URL fetcher that serves registered ``asset:`` names and refuses the rest.

    ``http(s)://`` would let a tenant's CSS or a crafted name make the renderer call into the
    network (SSRF); ``file://`` would read the server's files into a customer's PDF. ``data:``
    URIs are refused too: they add nothing that an asset cannot carry, they escape the size cap
    on assets (a tenant CSS could inline megabytes, or a decompression bomb), and with them the
    asset list would no longer be the complete inventory of what went into a PDF.
    """

    def __init__(self, assets: Mapping[str, bytes | tuple[bytes, str]]) -> None:
        # Deliberately not URLFetcher.__init__: it installs urllib's http/ftp/file/data
        # handlers. With none installed, even an accidental urllib open() cannot reach out.
        request.OpenerDirector.__init__(self)
        self._fail_on_errors = False  # read by weasyprint.urls.fetch: a refusal is not fatal
        self._request = None
        self._assets = {name: checked_asset(name, value) for name, value in assets.items()}
        self.served: list[str] = []
        self.refused: list[str] = []

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> URLFetcherResponse:
        """Serve a registered asset, or raise; WeasyPrint then renders without the resource."""
        asset = self._assets.get(url)
        if asset is None:
            shown = _loggable(url)
            self.refused.append(shown)
            log.warning("PDF render refused to fetch %r: not an asset of this render", shown)
            raise PermissionError(f"{shown!r} is not an asset of this render")
        self.served.append(url)
        return URLFetcherResponse(url, asset[0], {"Content-Type": asset[1]})


def _loggable(url: str) -> str:
    """A refused URL as logs may show it: no query or fragment (signed URLs carry tokens there),
    no data: payload, at most 100 characters."""
    shown = url.split(",", 1)[0] if url.startswith("data:") else url.split("?")[0].split("#")[0]
    return shown if len(shown) <= 100 else shown[:97] + "..."


def safe_fetcher(assets: Mapping[str, bytes | tuple[bytes, str]] | None = None) -> SafeFetcher:
    """A fetcher serving ``assets`` ({"asset:logo.png": bytes or (bytes, mime)}) and nothing else.

    The caller fetches and stores tenant assets; rendering never touches the network or the
    filesystem beyond what it is handed here.
    """
    return SafeFetcher(assets or {})


def checked_asset(name: str, value: bytes | tuple[bytes, str]) -> tuple[bytes, str]:
    """``(data, mime)`` of one asset; PDFError if its name is not ``asset:...`` or it is too big."""
    if not name.startswith(ASSET_SCHEME) or len(name) == len(ASSET_SCHEME):
        raise PDFError(f"asset names look like 'asset:logo.png', not {name[:60]!r}")
    data, mime = value if isinstance(value, tuple) else (value, None)
    if len(data) > MAX_ASSET_BYTES:
        raise PDFError(
            f"asset {name!r} is {len(data):,} bytes; the limit is {MAX_ASSET_BYTES:,} bytes"
        )
    guessed = mimetypes.guess_type("x." + name.rsplit(".", 1)[-1])[0] if "." in name else None
    return data, mime or guessed or "application/octet-stream"
