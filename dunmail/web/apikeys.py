"""The FastAPI side of API keys: ``Authorization: Bearer dm_...`` checked before the body is
read, and :class:`Call`, an authenticated call with its tenant, Idempotency-Key and body.
The keys themselves (issue, hash, check) are ``dunmail/web/keyring.py``, reached through
``Services.accounts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ValidationError

from dunmail.app import Services
from dunmail.web import idempotency
from dunmail.web.deps import services_of
from dunmail.web.models import ApiKey

# -- the FastAPI side: who is calling --------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="an API key: `dunmail apikey create NAME`")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key"},
    404: {"description": "no such record for this tenant"},
    409: {"description": "the same Idempotency-Key is still being worked on"},
    422: {
        "description": "invalid request (``detail`` or ``errors`` name the field), or an "
        "Idempotency-Key reused with a different request"
    },
}


Record = TypeVar("Record", bound=BaseModel)
Result = TypeVar("Result")
# Bodies above this many bytes are parsed, validated and imported one at a time (Call.in_thread).
LARGE_BODY = 64 * 1024


@dataclass(frozen=True)
class Call:
    """An authenticated API call: the tenant, the key's prefix, its Idempotency-Key and body.

    The body is kept as bytes; :meth:`record` parses and validates it where it is called,
    which for the upserts is a worker thread (:meth:`in_thread`): a 4 MB invoice takes about
    half a second of pydantic, which must not stop the event loop that also serves
    ``/healthz``, the customers' links and, under ``dunmail run``, the engine.
    """

    services: Services
    tenant_id: int
    slug: str
    key_prefix: str
    idempotency_key: str | None
    method: str
    path: str
    content_type: str | None
    body: bytes
    lane: anyio.CapacityLimiter  # the app's one-at-a-time lane for large bodies

    @property
    def by(self) -> str:
        """Who did it, as holds and notes record it."""
        return f"api:{self.key_prefix}"

    @cached_property
    def digest(self) -> str:
        """The request's hash for Idempotency-Key (computed on first use: it parses the body)."""
        return idempotency.request_hash(self.method, self.path, self.body)

    @cached_property
    def document(self) -> Any:
        """The body parsed as JSON; 422 like FastAPI's own when it is missing or not JSON."""
        if not self.body:
            raise _invalid("missing", ("body",), "Field required")
        if self.content_type is None or not _is_json(self.content_type):
            raise _invalid(
                "content_type",
                ("body",),
                "send the record as JSON (Content-Type: application/json)",
            )
        try:
            return json.loads(self.body)
        except json.JSONDecodeError as exc:
            raise _invalid(
                "json_invalid", ("body", exc.pos), "JSON decode error", {"error": exc.msg}
            ) from None
        except UnicodeDecodeError:
            raise _invalid("json_invalid", ("body",), "JSON decode error: not UTF-8") from None

    async def in_thread(self, work: Callable[[], Result]) -> Result:
        """``work`` (which parses the body) in a worker thread. A body over LARGE_BODY waits
        for the app's lane, so one large document at a time is worked on: each holds the GIL
        in pure Python for most of a second, and every one more in parallel slows the event
        loop and every page further (six at once made a link page take 2.9 s instead of
        0.1 s), and adds its own tens of MB of objects."""
        limiter = self.lane if len(self.body) > LARGE_BODY else None
        return await anyio.to_thread.run_sync(work, limiter=limiter)

    def record(self, model: type[Record]) -> Record:
        """The body validated as ``model``; a RequestValidationError (422, ``loc`` from "body")
        names the field, as when FastAPI validates a body itself."""
        try:
            return model.model_validate(self.document)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _invalid(
    kind: str, loc: tuple[str | int, ...], msg: str, ctx: dict[str, Any] | None = None
) -> RequestValidationError:
    error: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": {}}
    if ctx is not None:
        error["ctx"] = ctx
    return RequestValidationError([error])


async def api_key(request: Request) -> ApiKey:
    """The live key of this request's ``Authorization: Bearer dm_...`` header, else a 401.

    Checked once per request (the row is kept on ``request.state``), from the headers alone,
    in a worker thread (a database look-up must not hold the event loop).
    """
    found: ApiKey | None = getattr(request.state, "api_key", None)
    if found is not None:
        return found
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    if not credentials or scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    services = services_of(request)
    row = await anyio.to_thread.run_sync(lambda: services.accounts.api_key(credentials))
    if row is None:
        raise _unauthorized("invalid or revoked API key")
    request.state.api_key = row
    return row


class ApiRoute(APIRoute):
    """An API route that checks the key before FastAPI reads the body.

    FastAPI reads and parses a route's body before it solves its dependencies, so without this
    an unauthenticated client could make the server read and parse whatever it sends; here it
    gets its 401 from the headers, and ``limits.BodyLimit`` closes the connection behind it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_first(request: Request) -> Response:
            await api_key(request)
            return await handler(request)

        return key_first


async def api_call(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=200,
            description="POST only: the same key and request get the stored answer again",
        ),
    ] = None,
) -> Call:
    """Authenticate ``Authorization: Bearer dm_...`` (401 otherwise; the key is never logged),
    then read the body (``limits.BodyLimit`` bounds it); ``credentials`` is declared so the
    OpenAPI document shows the scheme, :func:`api_key` does the checking."""
    services = services_of(request)
    row = await api_key(request)
    body = await request.body()
    return Call(
        services=services,
        tenant_id=row.tenant_id,
        slug=services.tenants.slug(row.tenant_id),
        key_prefix=row.prefix,
        idempotency_key=idempotency_key,
        method=request.method,
        path=request.url.path,
        content_type=request.headers.get("content-type"),
        body=body,
        lane=request.app.state.large_bodies,
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


Api = Annotated[Call, Depends(api_call)]
