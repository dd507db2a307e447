"""EDGE: invoice, credit note, estimate, receipt and statement PDFs, rendered with WeasyPrint.

A PDF is rendered from one immutable document version (the JSON-safe context snapshotted on the
message): template -> HTML -> WeasyPrint -> bytes, whose SHA-256 the message stores, so the email,
its attachment and the hosted view show the same bytes. This module holds WeasyPrint's
per-process state and the render itself; the steps it puts together live beside it:
:mod:`mailer.content.pdf_html` (context -> HTML, pure), :mod:`mailer.content.pdf_fetch` (WeasyPrint
fetches nothing it was not handed: the assets registered for one render, the tenant's logo and our
fonts) and :mod:`mailer.content.pdf_fonts` (Dunmail Sans). :mod:`mailer.content.pdf_pool` runs
renders off the event loop, in warm worker processes.

Speed. Without Debian's libharfbuzz-subset0, WeasyPrint 70 subsets every embedded font with
fontTools, and fontTools (4.68 here) decompiles a font's whole GSUB/GPOS tables first, to drop them:
that was three quarters of an invoice's render time. So each process builds "Dunmail Sans" once,
a Latin subset of DejaVu Sans with no layout or hinting tables (about 38 KB a weight), and a
document that font covers is written with ``full_fonts``: embedded whole, no fontTools at all.
Other scripts (Arabic, Hebrew, Greek, Cyrillic ...) fall back to the system's DejaVu Sans and
are subset as usual; with libharfbuzz-subset installed everything is subset, in C. Each process
also keeps one FontConfiguration, the parsed stylesheet and the compiled templates, and
``PDFRenderer`` keeps warm worker processes. bench/render.py --levers measures each lever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from weasyprint import CSS, HTML
from weasyprint import __version__ as weasyprint_version
from weasyprint.text.fonts import FontConfiguration

from mailer.content.pdf_fetch import ASSET_SCHEME, checked_asset, safe_fetcher
from mailer.content.pdf_fonts import build_fonts, font_face
from mailer.content.pdf_html import (
    DOCUMENTS,
    PDF_TEMPLATES,
    PDFError,
    environment,
    pdf_language,
    pdf_words,
    render_html,
)
from mailer.content.pdf_samples import sample_pdf_context

log = logging.getLogger(__name__)

MAX_TENANT_CSS = 64 * 1024
# The modules whose code decides a PDF's bytes, for render_key (the sample data does not; the
# pool does: its workers fix SOURCE_DATE_EPOCH, which fontTools stamps into subset fonts; and
# formatting.py writes its amounts and dates).
_SOURCES = (
    "pdf.py",
    "pdf_fetch.py",
    "pdf_fonts.py",
    "pdf_html.py",
    "pdf_pool.py",
    "formatting.py",
)


@dataclass(frozen=True)
class RenderedPDF:
    """One rendered document: the bytes to attach and store, their SHA-256, the page count.

    ``missing_glyphs`` lists characters ("U+FFE5") that no installed font draws, shown as boxes:
    a CJK locale on a machine without a CJK font, say. The PDF is still valid; callers may flag it.
    """

    data: bytes
    sha256: str
    pages: int
    missing_glyphs: tuple[str, ...] = ()


# --- per-process WeasyPrint state ---------------------------------------------------------------


@dataclass(frozen=True)
class _Engine:
    """What every render in this process shares: built once, since building it is the slow part."""

    font_config: Any  # weasyprint FontConfiguration: Pango's font map and its caches
    stylesheet: Any  # weasyprint CSS: pdf.css plus the @font-face rules, parsed once
    covered: frozenset[int]  # code points Dunmail Sans draws; empty if it could not be built
    subset_in_c: bool  # libharfbuzz-subset is installed: subsetting is cheap, always subset


_RENDER_LOCK = threading.Lock()  # Pango and the shared FontConfiguration are not thread-safe


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    font_config = FontConfiguration()
    fonts, covered = build_fonts()
    faces = "".join(font_face(url, weight) for weight, (url, _) in fonts.items())
    stylesheet = CSS(
        string=faces + (PDF_TEMPLATES / "pdf.css").read_text(encoding="utf-8"),
        font_config=font_config,
        url_fetcher=safe_fetcher({url: (data, "font/ttf") for url, data in fonts.values()}),
    )
    return _Engine(font_config, stylesheet, covered, harfbuzz_subset_available())


def harfbuzz_subset_available() -> bool:
    """WeasyPrint subsets in C when Debian's libharfbuzz-subset0 is installed (~1 ms a font)."""
    try:
        from weasyprint.text.ffi import harfbuzz_subset
    except ImportError:  # an internal module: if it moves, assume the slow (fontTools) path
        return False
    return harfbuzz_subset is not None


# --- rendering ----------------------------------------------------------------------------------


def render_standalone_html(
    document: str, context: Mapping[str, Any], *, fonts_dir: Path | None = None
) -> str:
    """The document as one self-contained HTML page: pdf.css inlined and, with ``fonts_dir``,
    Dunmail Sans written there and linked by ``file://`` URL. For looking at a template in a
    browser and for bench/render.py's plain-WeasyPrint baseline, never for the PDFs we send:
    its ``file://`` URLs are exactly what SafeFetcher refuses.
    """
    css = (PDF_TEMPLATES / "pdf.css").read_text(encoding="utf-8")
    if fonts_dir is not None:
        for weight, (url, data) in build_fonts()[0].items():
            path = fonts_dir / url.removeprefix(ASSET_SCHEME)
            path.write_bytes(data)
            css = font_face(path.as_uri(), weight) + css
    return render_html(document, context).replace("</head>", f"<style>\n{css}</style>\n</head>", 1)


def render_pdf(
    document: str,
    context: Mapping[str, Any],
    *,
    assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
    tenant_css: str | None = None,
) -> bytes:
    """The PDF bytes of ``document`` (a key of DOCUMENTS) for ``context``; see render_document."""
    return render_document(document, context, assets=assets, tenant_css=tenant_css).data


def render_document(
    document: str,
    context: Mapping[str, Any],
    *,
    assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
    tenant_css: str | None = None,
    max_pages: int | None = None,
) -> RenderedPDF:
    """Template -> HTML -> WeasyPrint, synchronously, in this process (callers in async code use
    :class:`mailer.content.pdf_pool.PDFRenderer`). ``assets`` are the only URLs the document may
    load; ``tenant_css`` is applied after ours, without ``@font-face`` (fonts would outlive the
    render in the shared FontConfiguration and reach another tenant's PDFs) and with every URL in
    it refused.

    A document laid out to more than ``max_pages`` pages fails with a :class:`PDFError`
    before it is written (writing is a third of the time of a long document).
    """
    if tenant_css is not None and len(tenant_css) > MAX_TENANT_CSS:
        raise PDFError(
            f"tenant CSS is {len(tenant_css):,} characters; the limit is {MAX_TENANT_CSS:,}"
        )
    fetcher = safe_fetcher(assets)
    html = render_html(document, _without_missing_logo(context, assets or {}))
    text = html + (tenant_css or "")
    with _RENDER_LOCK:
        engine = _engine()
        # Without C subsetting, a document our small font covers embeds it whole: no fontTools
        # at all. Any other character (Arabic, emoji ...) pulls in a fallback font, subset.
        full_fonts = not engine.subset_in_c and _covers(engine.covered, text)
        try:
            stylesheets = [engine.stylesheet]
            if tenant_css:
                stylesheets.append(CSS(string=tenant_css, url_fetcher=fetcher))
            page_set = HTML(string=html, url_fetcher=fetcher).render(
                font_config=engine.font_config, stylesheets=stylesheets
            )
            pages = len(page_set.pages)
            if max_pages is not None and pages > max_pages:
                raise PDFError(
                    f"the {document} PDF runs to {pages:,} pages; the limit is {max_pages:,} "
                    "(the [pdf] max_pages setting)"
                )
            data: bytes = page_set.write_pdf(full_fonts=full_fonts)
        except PDFError:
            raise
        except Exception as exc:  # WeasyPrint has no error hierarchy: any failure is its own
            raise PDFError(
                f"WeasyPrint could not render {document}: {type(exc).__name__}: {exc}"
            ) from exc
    missing = _missing_glyphs(page_set)
    if missing:
        log.warning("%s PDF: no installed font draws %s", document, ", ".join(missing[:20]))
    return RenderedPDF(data, hashlib.sha256(data).hexdigest(), len(page_set.pages), missing)


def _missing_glyphs(page_set: Any) -> tuple[str, ...]:
    """Code points WeasyPrint drew as .notdef boxes (``Font.missing``, filled in write_pdf)."""
    fonts = getattr(page_set, "fonts", {}).values()
    points = {point for font in fonts for point in getattr(font, "missing", {})}
    return tuple(f"U+{point:04X}" for point in sorted(points))


def _covers(covered: frozenset[int], text: str) -> bool:
    return bool(covered) and all(ord(char) in covered for char in set(text))


def _without_missing_logo(
    context: Mapping[str, Any], assets: Mapping[str, object]
) -> Mapping[str, Any]:
    """A logo that was not handed in is left out, rather than drawn as a broken image."""
    tenant = context.get("tenant")
    if not isinstance(tenant, Mapping) or not tenant.get("logo_url"):
        return context
    if tenant["logo_url"] in assets:
        return context
    log.info("PDF logo %r was not among the assets; rendering without it", tenant["logo_url"])
    return {**context, "tenant": {**tenant, "logo_url": None}}


def render_key(
    document: str,
    context: Mapping[str, Any],
    *,
    assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
    tenant_css: str | None = None,
) -> str:
    """SHA-256 of everything that decides the PDF: equal keys mean the same document version was
    already rendered, so its stored PDF can be reused. It covers the templates, the modules that
    render (``_SOURCES``) and the WeasyPrint version, so a deploy that changes the output changes
    the key; and the language the PDF is written in with its words (``pdf_words``), so a
    German and an English PDF of one version never share a row, nor a PDF of a customer whose
    language changed (the context's locale, or the tenant's fallback) the old one.
    """
    digests = {
        name: hashlib.sha256(checked_asset(name, value)[0]).hexdigest()
        for name, value in (assets or {}).items()
    }
    payload = {
        "document": document,
        "context": context,
        "tenant_css": tenant_css,
        "assets": digests,
        "engine": _fingerprint(),
        "words": pdf_words(pdf_language(context).catalogs),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@lru_cache(maxsize=1)
def _fingerprint() -> str:
    digest = hashlib.sha256(weasyprint_version.encode())
    files = sorted(p for p in PDF_TEMPLATES.rglob("*") if p.is_file())
    code = [Path(__file__).with_name(name) for name in _SOURCES]
    for path in [*code, *files]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def warm() -> None:
    """Build this process's fonts, stylesheet and templates, and render once (Pango's caches)."""
    with _RENDER_LOCK:
        _engine()
    env = environment()
    for document in DOCUMENTS:
        env.get_template(f"{document}.html")
    render_document("invoice", sample_pdf_context("invoice", lines=2))
