"""EDGE: "Dunmail Sans", the small Latin font every PDF process builds once from DejaVu Sans.

Without Debian's libharfbuzz-subset0, WeasyPrint subsets every embedded font with fontTools, which
decompiles a font's whole GSUB/GPOS tables first: three quarters of an invoice's render time. A
Latin subset of DejaVu Sans with no layout or hinting tables (about 38 KB a weight) can instead be
embedded whole; the renderer does so for documents it covers (``full_fonts``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from io import BytesIO
from pathlib import Path

from fontTools import subset as ft_subset  # type: ignore[import-untyped]
from fontTools.ttLib import TTFont, TTLibError  # type: ignore[import-untyped]

from mailer.content.pdf_fetch import ASSET_SCHEME

log = logging.getLogger(__name__)

# "Dunmail Sans": Basic Latin, Latin-1, Latin Extended-A, Romanian s/t with comma, general
# punctuation (Babel's U+00A0/U+202F spaces and U+200E/U+200F marks), currency signs, minus.
FONT_FAMILY = "Dunmail Sans"
FONT_SOURCES = {"normal": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf"}
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_CODEPOINTS = frozenset(
    [*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x218, 0x21C), *range(0x2000, 0x2070)]
    + [*range(0x20A0, 0x20C1), 0x2116, 0x2122, 0x2212, 0xFFFD]
)


def font_face(url: str, weight: str) -> str:
    """The ``@font-face`` rule of one weight of Dunmail Sans, loaded from ``url``."""
    return (
        f'@font-face {{ font-family: "{FONT_FAMILY}"; src: url({url}); font-weight: {weight}; }}\n'
    )


@lru_cache(maxsize=1)
def build_fonts() -> tuple[dict[str, tuple[str, bytes]], frozenset[int]]:
    """Dunmail Sans regular and bold ({weight: (url, bytes)}) and the code points both draw.

    Built from the system's DejaVu Sans (Debian's fonts-dejavu-core) rather than shipped: no
    binary font in the repository. Without DejaVu the PDFs still render, in the system's
    default sans-serif, only slower.
    """
    fonts: dict[str, tuple[str, bytes]] = {}
    covered = FONT_CODEPOINTS | {0x09, 0x0A, 0x0D}
    for weight, filename in FONT_SOURCES.items():
        path = _find_font(filename)
        if path is None:
            log.warning("%s not found: PDFs use the default font and render slower", filename)
            return {}, frozenset()
        try:
            data, cmap = _derive_font(path, bold=weight == "bold")
        except (OSError, TTLibError, KeyError) as exc:
            log.warning("cannot build %s from %s: %s", FONT_FAMILY, path, exc)
            return {}, frozenset()
        fonts[weight] = (f"{ASSET_SCHEME}dunmail-sans-{weight}.ttf", data)
        covered &= cmap | {0x09, 0x0A, 0x0D}
    return fonts, frozenset(covered)


def _find_font(filename: str) -> Path | None:
    for folder in FONT_DIRS:
        root = Path(folder).expanduser()
        if root.is_dir():
            for path in sorted(root.rglob(filename)):
                return path
    return None


def _derive_font(path: Path, *, bold: bool) -> tuple[bytes, frozenset[int]]:
    """A small Latin subset without GSUB/GPOS/kern or hinting: cheap to embed or subset again.

    WeasyPrint drops the layout tables when it embeds a font anyway (text is already shaped);
    without them no ligatures are drawn either, so copied or extracted text reads "fi", not "ﬁ".
    """
    options = ft_subset.Options()
    options.drop_tables += [
        *("GSUB", "GPOS", "GDEF", "kern", "MATH", "FFTM"),
        *("fpgm", "prep", "cvt ", "hdmx", "VDMX", "LTSH", "gasp"),
    ]
    options.layout_features = []
    options.hinting = False
    options.glyph_names = False
    options.notdef_outline = True
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # keep the copyright and licence notice
    font = TTFont(str(path), recalcTimestamp=False)  # keep DejaVu's date: same bytes each time
    subsetter = ft_subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(FONT_CODEPOINTS))
    subsetter.subset(font)
    # A derived font gets a name of its own (the Bitstream Vera licence of DejaVu's glyphs asks
    # this of modified copies), and fontconfig then never mistakes it for the full DejaVu Sans.
    style = "Bold" if bold else "Regular"
    names = {1: FONT_FAMILY, 3: f"{FONT_FAMILY} {style} (dunmail)", 4: f"{FONT_FAMILY} {style}"}
    names[6] = f"{FONT_FAMILY.replace(' ', '')}-{style}"
    for record in font["name"].names:
        if record.nameID in names:
            record.string = names[record.nameID]
    cmap = frozenset(font.getBestCmap())
    out = BytesIO()
    font.save(out)
    return out.getvalue(), cmap
