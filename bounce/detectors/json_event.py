"""Delivery events mailed as JSON: what e-mail service providers write about a message.

Amazon SES (through SNS e-mail), SendGrid, Mailgun, Postmark, SparkPost and others each document
an event as a JSON object. Their field names differ; their meanings do not: an event word
(bounce, failed, complaint, delivered, deferred), a permanent/temporary flag, the recipient's
address beside the remote server's reply, and the original message's Message-ID. This reader
finds them by meaning and by value (an address, a status code, a reply code), never by one
provider's names, so a provider nobody wrote for still reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .base import Finding, Hit, Mail
from .scan import ADDRESS, STATUS, find_reply_code, find_status

# The event words each provider documents, by the kind of report they make.
_EVENTS = {
    "bounce": "bounce",
    "bounced": "bounce",
    "hardbounce": "bounce",
    "softbounce": "bounce",
    "failed": "bounce",
    "failure": "bounce",
    "permanentfailure": "bounce",
    "dropped": "bounce",
    "rejected": "bounce",
    "undeliverable": "bounce",
    "complaint": "complaint",
    "complained": "complaint",
    "spamreport": "complaint",
    "spamcomplaint": "complaint",
    "delivery": "delivered",
    "delivered": "delivered",
    "deferred": "delayed",
    "delayed": "delayed",
    "delay": "delayed",
}
_TEMPORARY = {"transient", "temporary", "soft", "softbounce", "deferred"}
# Keys that name the sender or the reply path: their addresses are never the recipient.
_SENDER_KEY = re.compile(r"from|source|sender|return|reply|envelopefrom|mailfrom")
# RFC 3464 action values a recipient row may carry itself.
_ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded"}
_BRACKETED = re.compile(r"<[^<>\s]+@[^<>\s]+>")  # an identifier in Message-ID syntax
_OPENING = re.compile(r"[\[{]\s*\"")
_WRAPPED = re.compile(r"!\r?\n[ \t]")  # a line broken at the transport's length limit
_MAX_ATTEMPTS = 32  # documents tried, decoded or not: a hostile body cannot make it quadratic
_MAX_DEPTH = 24
_MAX_CHARS = 1_000_000


@dataclass
class _Walk:
    """What a walk over one JSON document found, each with the depth it was found at."""

    events: list[tuple[int, str]] = field(default_factory=list)
    temporary: bool = False
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (address, its object)
    addresses: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    feedback_type: str | None = None


class JSONEventDetector:
    """Any JSON delivery event in the notice's body, read by meaning rather than by name."""

    name = "json_event"
    families: tuple[str, ...] = ()  # documented by many providers: read by no one's field names

    def detect(self, mail: Mail) -> Finding | None:
        """The first JSON document in the body that reports an event about an address."""
        body = mail.body[:_MAX_CHARS]
        if _OPENING.search(body) is None:
            return None
        for document in _documents(_WRAPPED.sub("", body)):  # at most _MAX_ATTEMPTS
            finding = self._read(document)
            if finding is not None:
                return finding
        return None

    def _read(self, document: Any) -> Finding | None:
        walk = _Walk()
        _visit(document, walk, depth=0, key="")
        if not walk.events:
            return None
        kind = min(walk.events)[1]
        hits = _hits(walk, kind)
        if not hits:
            return None
        return Finding(
            kind=kind,
            detector=self.name,
            hits=tuple(hits),
            original_message_id=_message_id(walk.message_ids),
            feedback_type=(walk.feedback_type or "abuse") if kind == "complaint" else None,
        )


def _documents(text: str) -> Iterator[Any]:
    """Each JSON object or array the text holds, first to last, at most a few."""
    decoder = json.JSONDecoder(strict=False)
    position = 0
    for _ in range(_MAX_ATTEMPTS):
        opening = _OPENING.search(text, position)
        if opening is None:
            return
        try:
            value, end = decoder.raw_decode(text, opening.start())
        except (ValueError, RecursionError):
            position = opening.start() + 1
            continue
        position = end
        yield value


def _norm(key: str) -> str:
    return re.sub(r"[^a-z]", "", key.lower())


def _address(value: str) -> str | None:
    """``value`` if it is one address and nothing else (angle brackets allowed)."""
    text = value.strip().strip("<>").strip()
    if "@" not in text or len(text) > 320:
        return None
    found = ADDRESS.fullmatch(text)
    return found.group(0).lower() if found else None


def _visit(value: Any, walk: _Walk, *, depth: int, key: str) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, list):
        for item in value:
            _visit(item, walk, depth=depth + 1, key=key)
        return
    if isinstance(value, str):
        _scalar(value, walk, depth=depth, key=key)
        return
    if not isinstance(value, dict):
        return
    if set(value) == {"name", "value"} and isinstance(value["name"], str):
        # A header list ({"name": "To", "value": "..."}): the name is the key.
        _visit(value["value"], walk, depth=depth, key=_norm(value["name"]))
        return
    for name, item in value.items():
        norm = _norm(str(name))
        if isinstance(item, str):
            address = _address(item)
            if address is not None and _recipient_key(norm):
                walk.rows.append((address, value))
        _visit(item, walk, depth=depth + 1, key=norm)


def _identifier_key(key: str) -> bool:
    """A key naming an identifier (``messageId``, ``smtp-id``, ``feedbackId``)."""
    return key.endswith("id")


def _recipient_key(key: str) -> bool:
    """Whether an address under ``key`` may be a recipient: not a sender's, not an identifier."""
    return not _SENDER_KEY.search(key) and not _identifier_key(key)


def _scalar(value: str, walk: _Walk, *, depth: int, key: str) -> None:
    word = _norm(value) if len(value) <= 24 else ""
    if word in _EVENTS and key not in _ACTION_KEYS:
        walk.events.append((depth, _EVENTS[word]))
    if word in _TEMPORARY:
        walk.temporary = True
    if _identifier_key(key) and (key.endswith("messageid") or _BRACKETED.fullmatch(value)):
        if "@" in value:
            walk.message_ids.append(value.strip())
    if key.endswith("feedbacktype") and word:
        walk.feedback_type = value.strip().lower()
    address = _address(value)
    if address is not None and _recipient_key(key):
        walk.addresses.append(address)


# A recipient row's own action ("action": "failed") says how that row ended, not what the
# event is; it is read per row below.
_ACTION_KEYS = {"action"}


def _hits(walk: _Walk, kind: str) -> list[Hit]:
    rows = [(a, row) for a, row in walk.rows if _evidence(row, a)]
    if not rows:
        rows = [(a, row) for a, row in walk.rows if _own_address_key(row, a)]
    if not rows and kind != "bounce" and kind != "delayed":
        rows = [(a, {}) for a in walk.addresses]
    hits: list[Hit] = []
    seen: set[str] = set()
    for address, row in rows:
        if address in seen:
            continue
        seen.add(address)
        if kind in ("bounce", "delayed"):
            hits.append(_failure(address, row, temporary=walk.temporary or kind == "delayed"))
        else:
            hits.append(Hit(address=address, action="delivered" if kind == "delivered" else None))
    return hits


def _groups(row: dict[str, Any], address: str) -> list[list[str]]:
    """The row's own text values, then each object's one level down; the address left out."""
    groups: list[list[str]] = [[]]
    for item in row.values():
        if isinstance(item, dict):
            groups.append([t for v in item.values() if (t := _text(v, address))])
        elif text := _text(item, address):
            groups[0].append(text)
    return groups


def _text(value: Any, address: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    text = str(value).strip()
    return "" if _address(text) == address else text


def _coded(text: str) -> bool:
    return bool(STATUS.search(text) or find_reply_code(text))


def _evidence(row: dict[str, Any], address: str) -> bool:
    """Whether the row says how delivery to its address went: a status or a reply code."""
    return any(_coded(t) for group in _groups(row, address) for t in group)


def _own_address_key(row: dict[str, Any], address: str) -> bool:
    """A row naming one recipient (``{"email": ...}``), not a header block listing several."""
    named = {
        found
        for key, value in row.items()
        if isinstance(value, str) and _recipient_key(_norm(str(key)))
        if (found := _address(value))
    }
    return named == {address}


def _failure(address: str, row: dict[str, Any], *, temporary: bool) -> Hit:
    groups = _groups(row, address)
    coded = [(len(t), t, g) for g in groups for t in g if _coded(t)]
    diagnostic = ""
    if coded:
        _, diagnostic, group = max(coded, key=lambda c: c[0])
        if not any(c.isalpha() for c in diagnostic):
            # A bare code ({"code": 550, "description": "Not delivered"}): add its words.
            words = max((t for t in group if " " in t), key=len, default="")
            diagnostic = f"{diagnostic} {words}".strip()
    stated = next((t.lower() for t in groups[0] if t.lower() in _ACTIONS), None)
    action = "delayed" if temporary else (stated or "failed")
    return Hit(
        address=address,
        status=find_status(diagnostic)
        or next(filter(None, (find_status(t) for _, t, _ in coded)), None),
        reply_code=find_reply_code(diagnostic.partition(";")[2] or diagnostic),
        action=action,
        diagnostic=diagnostic,
    )


def _message_id(found: list[str]) -> str | None:
    """The original message's Message-ID: one written in angle brackets first."""
    bracketed = [m for m in found if m.startswith("<") and m.endswith(">")]
    if bracketed:
        return bracketed[0]
    return f"<{found[0]}>" if found else None
