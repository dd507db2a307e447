"""``/docs`` (Swagger UI) and ``/redoc`` served from a package's files, with no CDN: the HTML
names only this app's URLs, the assets answer, and a real headless Chromium that may load
nothing from elsewhere still renders the API's title and routes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from dunmail.app import Services
from mailer.outbound.memory import MemoryTransport
from tests.chromium import skip_reason

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PAGES = ("/docs", "/redoc")
_URL = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


def _urls(html: str) -> list[str]:
    return [a or b for a, b in _URL.findall(html)]


@pytest.mark.parametrize("path", PAGES)
async def test_the_docs_page_names_only_same_origin_urls_and_they_answer(
    web_server: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=web_server) as client:
        page = await client.get(path)
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        urls = _urls(page.text)
        assert len(urls) >= 3, urls  # script, favicon, the OpenAPI document (and a stylesheet)
        assert "/openapi.json" in page.text
        for url in urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{path} loads {url} from elsewhere"
            assert url.startswith("/"), url
            answer = await client.get(url)
            assert answer.status_code == 200, url
            assert answer.content, url
        assert "cdn" not in page.text.lower()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


@pytest.mark.parametrize(
    ("path", "title"), [("/docs", ".info .title"), ("/redoc", "h1")], ids=["swagger", "redoc"]
)
async def test_the_docs_render_offline_in_chromium(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: object,
    path: str,
    title: str,
) -> None:
    from playwright.async_api import Browser, Route

    assert isinstance(browser, Browser)
    origin = urlsplit(web_server).netloc
    elsewhere: list[str] = []

    async def only_here(route: Route) -> None:
        if urlsplit(route.request.url).netloc != origin:
            elsewhere.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    page = await browser.new_page(base_url=web_server)
    page.set_default_timeout(20000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.route("**/*", only_here)
    await page.goto(path)
    heading = page.locator(title).first
    await heading.wait_for()
    assert "dunmail" in await heading.inner_text()
    await page.get_by_text("/api/v1/customers").first.wait_for()
    assert elsewhere == []
    assert errors == []
