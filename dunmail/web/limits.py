"""What happens before a request body is read: its size limit, and the sign-in of form posts.

FastAPI reads (and parses) a route's body *before* it solves the route's dependencies, so a
dependency that checks an API key or a session cannot stop a body from being read. Both
middlewares here are pure ASGI, in front of the routes:

* :class:`BodyLimit` refuses a body over its limit with 413: at once when ``Content-Length``
  says so (nothing is read), otherwise as soon as the bytes counted from ``receive`` pass the
  limit (chunked uploads and bodies that arrive slower than announced). Limits are per path:
  the API's record upserts may be large (an invoice and all its lines), every other body is a
  form a person filled in or a few fields of JSON. Any answer given before the body was read to
  its end (a 413, a 401, a redirect to sign in) carries ``Connection: close``: the server
  discards at most a bounded part of the rest (so that a client that writes its whole body
  before it reads still sees the answer), then closes the connection on the upload.
* :class:`SignedInFirst` answers a POST to the AR inbox without a live session (a redirect to
  sign in) or from another site (403) from its headers alone, before the form is read. The
  routes' own dependency (``auth.csrf_checked``) still checks the form's CSRF token.

The JSON API checks its key the same way, before the body: see ``apikeys.ApiRoute``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dunmail.web import auth

log = logging.getLogger(__name__)

# After an early answer, how long the server goes on reading (and discarding) what the client
# still sends before it closes the connection (see _Exchange.deliver).
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limit:
    """The most bytes a request body may have, and the setting that says so (named in the 413)."""

    max_bytes: int
    setting: str


class BodyLimit:
    """Refuse request bodies larger than their path's :class:`Limit` with 413, unread."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: Limit,
        paths: Mapping[str, Limit],
        patterns: Sequence[tuple[re.Pattern[str], Limit]] = (),
    ) -> None:
        """``paths`` by the exact path; ``patterns`` (a path that must match in full) for a
        path that carries a token, such as the account page's upload of a query's file."""
        self.app = app
        self.default = default
        self.paths = dict(paths)
        self.patterns = tuple(patterns)

    def limit_of(self, path: str) -> Limit:
        found = self.paths.get(path)
        if found is None:
            found = next((lim for p, lim in self.patterns if p.fullmatch(path)), self.default)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.limit_of(scope["path"]))
        if exchange.declared is not None and exchange.declared > exchange.limit.max_bytes:
            await exchange.refuse()
            return
        await exchange.run(self.app)


class _Exchange:
    """One request under a limit: counts what the app receives, and marks and follows up any
    answer given before the body was read to its end (an early answer)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: Limit) -> None:
        self.scope, self.receive, self.send, self.limit = scope, receive, send, limit
        headers = Headers(scope=scope)
        self.declared = _content_length(headers)
        # No Content-Length and no Transfer-Encoding means no body (RFC 9112 section 6.3).
        self.body_done = not self.declared and "transfer-encoding" not in headers
        # A client that asked "Expect: 100-continue" sends nothing until told to: reading on
        # after an early answer would tell it to (uvicorn sends 100 Continue on receive).
        self.expects_continue = headers.get("expect", "").lower() == "100-continue"
        self.received = 0
        self.started = False  # the response has begun (ours or the app's)
        self.refused = False  # we answered 413: the app's own answer is dropped

    async def run(self, app: ASGIApp) -> None:
        """The app, with a counted ``receive`` and a ``send`` that drops its answer once ours
        went out."""
        try:
            await app(self.scope, self.counted, self.forwarded)
        except ClientDisconnect:
            if not self.refused:
                raise
            # Our 413 went out and the app was told the client left; that is all it is.
            log.debug("body over %s on %s: refused", self.limit.setting, self.scope["path"])

    async def counted(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.limit.max_bytes:
            if not self.started:
                await self.refuse()
            # The app sees a client gone: it stops reading, and nothing more is read for it.
            return {"type": "http.disconnect"}
        if not message.get("more_body", False):
            self.body_done = True
        return message

    async def refuse(self) -> None:
        """Answer 413 (the request's body stays unread, or read only to the limit)."""
        self.refused = True
        method, path, limit = self.scope.get("method", "POST"), self.scope["path"], self.limit
        detail = (
            f"the request body is larger than the {limit.max_bytes} bytes {method} {path} "
            f"accepts ({limit.setting})"
        )
        await JSONResponse({"detail": detail}, status_code=413)(
            self.scope, self.receive, self.deliver
        )

    async def forwarded(self, message: Message) -> None:
        if not self.refused:
            await self.deliver(message)

    async def deliver(self, message: Message) -> None:
        """Send ``message``; an early answer says ``Connection: close`` and lingers."""
        if message["type"] == "http.response.start":
            self.started = True
            if not self.body_done:
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
        elif (
            message["type"] == "http.response.body"
            and not message.get("more_body", False)
            and not self.body_done
            and not self.expects_continue
        ):
            # The answer goes out whole now; the server closes the connection only when the
            # response ends, so end it after a bounded lingering read (nginx's lingering_close):
            # most HTTP clients send the whole body before they read, and a connection closed
            # on unread data is reset, which can lose the answer before the client reads it.
            await self.send({**message, "more_body": True})
            await self._linger()
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await self.send(message)

    async def _linger(self) -> None:
        """Read and discard what the client still sends: all of a declared body up to twice
        the limit, else up to the limit more, for at most LINGER_SECONDS."""
        left = (self.declared or 0) - self.received
        budget = left if 0 < left <= 2 * self.limit.max_bytes else self.limit.max_bytes
        with anyio.move_on_after(LINGER_SECONDS):
            while budget > 0:
                message = await self.receive()
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.isdigit():
        return None  # h11 has refused a malformed one before the app is called
    return int(value)


class SignedInFirst:
    """POSTs under ``prefix`` need a live session and a same-site origin before the form is read.

    ``auth.signed_in`` and ``auth.same_origin`` decide, as they do for the routes, so the answer
    is the one the route would give (303 to the sign-in page, 403), only sooner.
    """

    def __init__(self, app: ASGIApp, *, prefix: str = "/inbox/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers and cookies only: no receive, so no body
        try:
            await auth.signed_in(request)
            if not auth.same_origin(request):
                raise HTTPException(403, "the form has expired or came from another site: reload")
        except HTTPException as exc:
            response = JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
