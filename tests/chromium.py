"""Debian's headless Chromium for the browser tests, driven by Playwright's async API.

One place for where the browser is, why a test skips without it, and the ``browser`` fixture
(one Chromium per test, on the test's event loop). A module that drives pages imports
``browser`` and marks itself with ``needs_chromium``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = Path("/usr/bin/chromium")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return (
            "Playwright for Python is not installed (pip install playwright; no browser download)"
        )
    return None


needs_chromium = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium, closed after the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()
