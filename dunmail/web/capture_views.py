"""The dev capture viewer: the mail the capture server filed, listed, opened and downloaded.

It exists only where the start page shows captured mail (``env = "dev"`` with ``[capture]``
enabled) and, like that page, needs no sign-in there; elsewhere every route answers 404. The
reading is ``dunmail/capture_reader.py``; these routes only shape its answers into HTTP.

A captured message is hostile until proven otherwise: its HTML is served only by the ``/html``
route, whose policy forbids every script, connection and frame (``default-src 'none'``) and
which the page embeds in an ``<iframe sandbox="">``, so the message gets an opaque origin and
can neither run nor reach the app's cookies. Downloads are attachments (never shown inline),
with the part's declared type, a cleaned file name and a sandboxing policy of their own.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response

from dunmail.capture_reader import MAX_QUERY, CaptureBox, Download, viewer_box
from dunmail.web.deps import SECURITY_HEADERS, page, services_of

router = APIRouter(prefix="/capture", include_in_schema=False)

# The message's own HTML: inline styles and data: images only; nothing runs, nothing loads.
FRAME_POLICY = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; sandbox"
# The viewer's pages: the app's policy, plus frames from this origin (the /html route).
PAGE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"] + "; frame-src 'self'",
}
Key = Annotated[str, PathParam(min_length=1, max_length=255)]  # the reader checks its shape
Index = Annotated[int, PathParam(ge=0, le=100_000)]


def _box(request: Request) -> CaptureBox:
    capture = services_of(request).config
    box = viewer_box(
        env=capture.env, enabled=capture.capture.enabled, maildir=capture.capture.maildir
    )
    if box is None:
        raise HTTPException(status_code=404)
    return box


def _missing() -> HTTPException:
    return HTTPException(status_code=404, detail="no such captured message")


@router.get("")
def listing(
    request: Request,
    q: Annotated[str, Query(max_length=MAX_QUERY)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    """Newest first, a page at a time; ``q`` searches recipients and subjects."""
    listed = _box(request).page(query=q, page=page_number)
    response = page(request, "capture/list.html", {"listed": listed})
    response.headers.update(PAGE_HEADERS)
    return response


@router.get("/{key}")
def message(request: Request, key: Key) -> HTMLResponse:
    """Headers, the text part, the HTML part in a sandboxed frame, attachments."""
    found = _box(request).message(key)
    if found is None:
        raise _missing()
    response = page(request, "capture/message.html", {"message": found})
    response.headers.update(PAGE_HEADERS)
    return response


@router.get("/{key}/html")
def html(request: Request, key: Key) -> HTMLResponse:
    """The message's HTML as sent, for the sandboxed frame only (see the module's docstring)."""
    body = _box(request).html(key)
    if body is None:
        raise _missing()
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": FRAME_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@router.get("/{key}/parts/{index}")
def part(request: Request, key: Key, index: Index) -> Response:
    """One attachment's decoded bytes, as a download."""
    found = _box(request).attachment(key, index)
    if found is None:
        raise HTTPException(status_code=404, detail="no such part")
    return _download(found)


@router.get("/{key}/raw")
def raw(request: Request, key: Key) -> Response:
    """The message's source, as the capture server filed it."""
    found = _box(request).raw(key)
    if found is None:
        raise _missing()
    return _download(found)


def _download(found: Download) -> Response:
    # The name is already safe (no quote, slash or control); an ASCII copy for old clients and
    # the exact one in RFC 5987's filename*.
    ascii_name = found.filename.encode("ascii", "replace").decode().replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(found.filename)}"
    return Response(
        found.data,
        media_type=found.content_type,
        headers={
            "Content-Disposition": disposition,
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
