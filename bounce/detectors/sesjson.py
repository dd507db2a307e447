"""Amazon SES notifications delivered by SNS e-mail: a JSON document in the body."""

from __future__ import annotations

import json
import re
from typing import Any

from .base import Finding, Hit, Mail
from .scan import find_reply_code, find_status, first_address

_KINDS = {"bounce": "bounce", "complaint": "complaint", "delivery": "delivered"}


class SESJSONDetector:
    """``{"notificationType": "Bounce", "bounce": {"bouncedRecipients": [...]}, "mail": {...}}``."""

    name = "ses_json"
    families: tuple[str, ...] = ("AmazonSES",)

    def detect(self, mail: Mail) -> Finding | None:
        """Decode the JSON notice; None when the body holds none."""
        if '"notificationType"' not in mail.body and '"eventType"' not in mail.body:
            return None
        document = _json(mail.body) or _salvage(mail.body)
        if document is None:
            return None
        kind_name = str(document.get("notificationType") or document.get("eventType") or "")
        kind = _KINDS.get(kind_name.lower())
        if kind is None:
            return None
        section = _object(document.get(kind_name[0].lower() + kind_name[1:]))
        hits: list[Hit] = []
        if kind == "bounce":
            transient = str(section.get("bounceType", "")).lower() == "transient"
            for row in map(_object, section.get("bouncedRecipients") or []):
                address = first_address(str(row.get("emailAddress", "")))
                if address is None:
                    continue
                diagnostic = str(row.get("diagnosticCode", ""))
                status = find_status(diagnostic) or find_status(str(row.get("status", "")))
                hits.append(
                    Hit(
                        address=address,
                        status=status,
                        reply_code=find_reply_code(diagnostic.partition(";")[2] or diagnostic),
                        action=str(row.get("action") or ("delayed" if transient else "failed")),
                        diagnostic=diagnostic,
                    )
                )
        else:
            rows = section.get("complainedRecipients") or [
                {"emailAddress": a} for a in section.get("recipients", [])
            ]
            for row in map(_object, rows):
                address = first_address(str(row.get("emailAddress", "")))
                if address:
                    hits.append(
                        Hit(address=address, action="delivered" if kind != "complaint" else None)
                    )
        original = _object(_object(document.get("mail")).get("commonHeaders")).get("messageId")
        return Finding(
            kind=kind,
            detector=self.name,
            hits=tuple(hits),
            original_message_id=str(original) if original else None,
            feedback_type=str(section.get("complaintFeedbackType", "abuse"))
            if kind == "complaint"
            else None,
        )


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a truncated notice has odd shapes."""
    return value if isinstance(value, dict) else {}


def _json(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict) and ("notificationType" in value or "eventType" in value):
            return value
        start = text.find("{", start + 1)
    return None


_FIELD = re.compile(
    r'"(notificationType|emailAddress|action|status|diagnosticCode|bounceType)"\s*:\s*"([^"]*)"'
)


def _salvage(text: str) -> dict[str, Any] | None:
    """A notice whose JSON was cut or wrapped in transit: read its fields one by one."""
    document: dict[str, Any] = {}
    rows: list[dict[str, str]] = []
    for name, value in _FIELD.findall(text):
        if name == "emailAddress":
            rows.append({name: value})
        elif name in ("notificationType", "bounceType"):
            document.setdefault(name, value)
        elif rows:
            rows[-1].setdefault(name, value)
    if "notificationType" not in document:
        return None
    kind = document["notificationType"]
    key = "bouncedRecipients" if kind == "Bounce" else "complainedRecipients"
    document[kind[0].lower() + kind[1:]] = {
        key: rows,
        "bounceType": document.get("bounceType", ""),
    }
    return document
