"""The last resort: plain-text bounces from any MTA, read by their common shape.

Sendmail, Exim, qmail, Exchange, Gmail, Yahoo, Domino and most others write a paragraph naming the
failed address followed by the remote server's reply. This detector finds the addresses the
notification text is about and the reply text nearest to each.
"""

from __future__ import annotations

import re

from .base import ADDRESS, Finding, Hit, Mail, find_command, find_reply_code, find_status

_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|fail|notification|problem|report)"
    r"|failure notice|returned mail|mail delivery failed|could not be delivered|delivery failed"
    r"|not delivered|nondeliver|non-deliver|bounce|mail system error|delivery error"
    r"|permanent error|failed delivery|delivery has failed|message delayed|delivery delayed"
    r"|warning: could not send|mail could not|rejected|error sending|unzustellbar|non remis"
    r"|delivery notification|returned to sender|problem delivering",
    re.IGNORECASE,
)
_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|wasn't able to deliver|was not delivered"
    r"|undeliverable|permanent(?:ly)? (?:error|fail)|fatal errors?|delivery (?:has )?failed"
    r"|failed permanently|user unknown|unknown user|no such (?:user|mailbox)|does not exist"
    r"|delivery to the following|following addresses? (?:had|failed)|not be delivered to"
    r"|the following (?:recipient|address)|unable to deliver|message delivery failed"
    r"|could not deliver|smtp error|remote host said|delivery is delayed|has been delayed"
    r"|mailbox (?:is )?(?:full|unavailable)|returned to the sender|giving up",
    re.IGNORECASE,
)
_DELAY = re.compile(
    r"delay(?:ed)?\b|will (?:continue|keep) (?:to )?(?:try|attempt)|will be retried|still trying"
    r"|not yet been delivered|will try again|will retry|temporary|warning: could not send",
    re.IGNORECASE,
)
_FINAL = re.compile(
    r"giving up|permanent|gave up|could not be delivered|has been rejected|failed permanently"
    r"|will not be retried|undeliverable|fatal|expired|unable to deliver|failed:|not delivered",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(r"\bdelay|\bwarning\b|deferred|still trying", re.IGNORECASE)
_FAILED_SUBJECT = re.compile(r"fail|undeliver|returned|not delivered", re.IGNORECASE)
_SKIP_LINE = re.compile(
    r"^[\s>]*(?:from|to|cc|reply-to|return-path|sender|received|message-id|references|in-reply-to|date"
    r"|x-[\w-]+|dkim-signature|authentication-results|list-\w+|errors-to)\s*:",
    re.IGNORECASE,
)
_NOTICE_CHARS = 1000
_RECIPIENT_HEADER = re.compile(r"^(?:to|cc):(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_CONTACTS = {"postmaster", "support", "abuse", "help", "hostmaster", "webmaster", "admin"}
_FROM_BEFORE = re.compile(r"\b(?:from|sender|by|for)\s*[<\[(]?\s*$", re.IGNORECASE)
_SIGNAL = re.compile(
    r"\b[245]\.\d{1,3}\.\d{1,3}\b|\b[45]\d\d\b|unknown|not (?:found|recognized|exist)|"
    r"does not|doesn't|invalid|reject|refused|denied|fail|error|full|quota|unavailable|"
    r"disabled|blocked|expired|timed? ?out|no such|unable|could not|couldn't",
    re.IGNORECASE,
)
_NEAR_MESSAGE_ID = re.compile(r"message[- ]?id|msgid|queue id", re.IGNORECASE)


class TextBounceDetector:
    """Any bounce whose facts are only in its prose."""

    name = "text"

    def detect(self, mail: Mail) -> Finding | None:
        """A bounce if the sender or the subject say so and the text names a failed address."""
        looks_like = mail.from_daemon or _SUBJECT.search(mail.subject)
        if not looks_like and not _BODY.search(mail.body):
            return None
        if not looks_like and mail.header("auto-submitted") == "" and not mail.reports:
            # A person's mail that merely talks about delivery needs a stronger sign.
            if len(_BODY.findall(mail.body)) < 2:
                return None
        hits = tuple(_hits(mail))
        if not hits and mail.from_daemon and _SUBJECT.search(mail.subject):
            # A mail system's failure notice that names nobody ("Delivery report unavailable"):
            # the returned message's own recipients are the ones it failed for.
            notice = " ".join(mail.body.split())[:_NOTICE_CHARS]
            hits = tuple(
                Hit(
                    address=a,
                    status=find_status(notice, failures_only=True),
                    action="failed",
                    diagnostic=notice,
                )
                for a in sorted(_original_recipients(mail.original))
            )
        if not hits:
            return None
        return Finding(kind=_kind(mail), detector=self.name, hits=hits)


def _kind(mail: Mail) -> str:
    """``delayed`` for a warning that the mail system is still trying, else ``bounce``."""
    if _DELAY_SUBJECT.search(mail.subject) and not _FAILED_SUBJECT.search(mail.subject):
        return "delayed"  # "Delivery Status Notification (Delay)": the subject is explicit
    text = mail.subject + "\n" + mail.body
    return "delayed" if _DELAY.search(text) and not _FINAL.search(text) else "bounce"


def _header_addresses(mail: Mail, *names: str) -> set[str]:
    return {a.lower() for name in names for a in ADDRESS.findall(mail.header(name))}


def _hits(mail: Mail) -> list[Hit]:
    excluded = _header_addresses(mail, "from", "return-path")
    lines = mail.body.split("\n")
    found: list[tuple[str, int]] = []
    # Exim and Google name the failed addresses in a header; trust it over the prose.
    failed = [a.lower() for a in ADDRESS.findall(mail.header("x-failed-recipients"))]
    for index, line in enumerate(lines):
        if _SKIP_LINE.match(line):
            continue
        for match in ADDRESS.finditer(line):
            address = match.group(0).lower().strip(".")
            if address in excluded or (failed and address not in failed):
                continue
            if _incidental(line, match) or any(address == a for a, _ in found):
                continue
            found.append((address, index))
    for address in failed:
        if all(address != a for a, _ in found):
            found.append((address, len(lines)))
    found = _most_likely(found, lines, mail)
    if not found:
        return []
    notice = "\n".join(lines)
    hits: list[Hit] = []
    for position, (address, index) in enumerate(found):
        end = found[position + 1][1] if position + 1 < len(found) else len(lines)
        window = _window(lines, index, max(end, index + 1))
        if not _SIGNAL.search(ADDRESS.sub("", window)):
            # Only the address is listed (Notes, SMS gateways): the notice itself is the reason.
            window = " ".join(notice.split())[:_NOTICE_CHARS]
        status = find_status(window, failures_only=True) or find_status(notice, failures_only=True)
        code = find_reply_code(window) or find_reply_code(notice)
        action = "failed"
        if status and status[0] == "4" and not _FINAL.search(notice):
            action = "delayed"
        hits.append(
            Hit(
                address=address,
                status=status,
                reply_code=code,
                action=action,
                diagnostic=window,
                command=find_command(window) or find_command(notice),
            )
        )
    return hits


def _incidental(line: str, match: re.Match[str]) -> bool:
    """An address named for another reason: a daemon, a Message-ID, a sender ("from <a@b>")."""
    before = line[max(0, match.start() - 20) : match.start()]
    half_bracketed = line[match.end() : match.end() + 1] == ">" and "<" not in before
    return (
        match.group(0).lower().startswith("mailer-daemon@")
        or bool(_NEAR_MESSAGE_ID.search(before) or _FROM_BEFORE.search(before))
        or half_bracketed
    )


def _most_likely(
    found: list[tuple[str, int]], lines: list[str], mail: Mail
) -> list[tuple[str, int]]:
    """Of several addresses in the text, the ones the notice reports as failed.

    A notice also names contacts ("write to postmaster@...") and people from the original
    headers. An address is kept when an error is written beside it or when the returned
    message's own To/Cc lists it.
    """
    if len(found) < 2:
        return found
    original_to = _original_recipients(mail.original)

    def reported(address: str, index: int) -> bool:
        beside = " ".join(lines[index : index + 2])
        return address in original_to or bool(_SIGNAL.search(beside))

    # The notice goes to the original sender, so its own To names the sender, not a recipient.
    ours = _header_addresses(mail, "to", "cc", "reply-to", "delivered-to")
    people = [(a, i) for a, i in found if a.partition("@")[0] not in _CONTACTS and a not in ours]
    kept = [(a, i) for a, i in people if reported(a, i)]
    return kept or people or found


def _original_recipients(text: str) -> set[str]:
    head = text.lstrip("\n").partition("\n\n")[0]
    found: set[str] = set()
    for match in _RECIPIENT_HEADER.finditer(head):
        found.update(a.lower() for a in ADDRESS.findall(match.group(1)))
    return found


def _window(lines: list[str], start: int, end: int) -> str:
    """The address's line and the paragraph after it, up to the next address."""
    out: list[str] = []
    blank = 0
    for line in lines[start : min(end, start + 12)]:
        if not line.strip():
            blank += 1
            if blank > 1 and out:
                break
            continue
        out.append(line.strip())
    return " ".join(" ".join(out).split())
