"""Reading plain-text bounce notices: shared by the family detectors and the last-resort reader.

Most MTAs that send no RFC 3464 part write a paragraph naming each failed address followed by
the remote server's reply. A family detector recognises its notice by its own marks and cuts it
into ``(address, paragraph)`` blocks; the functions here turn blocks into hits the same way for
every family, and read any notice by its common shape when a family's layout was not found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from .base import Finding, Hit, Mail
from .phrase import Phrase
from .scan import ADDRESS, find_command, find_reply_code, find_status

SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|fail|notification|problem|report)"
    r"|failure notice|returned mail|mail delivery failed|could not be delivered|delivery failed"
    r"|not delivered|nondeliver|non-deliver|bounce|mail system error|delivery error"
    r"|permanent error|failed delivery|delivery has failed|message delayed|delivery delayed"
    r"|warning: could not send|mail could not|rejected|error sending|unzustellbar|non remis"
    r"|delivery notification|returned to sender|problem delivering",
    re.IGNORECASE,
)
_DELAY = Phrase(
    r"delay(?:ed)?\b|will (?:continue|keep) (?:to )?(?:try|attempt)|will be retried|still trying"
    r"|not yet been delivered|will try again|will retry|temporary|warning: could not send"
)
FINAL = Phrase(
    r"giving up|permanent|gave up|could not be delivered|has been rejected|failed permanently"
    r"|will not be retried|undeliverable|fatal|expired|unable to deliver|failed:|not delivered"
)
# A success notice (RFC 3464 "delivered"/"relayed" told in prose, a return receipt). It counts
# only where no failure is written anywhere in the notice: a mixed notice stays a bounce.
_SUCCESS = Phrase(
    r"(?:was|were|has been|have been) (?:successfully )?(?:delivered|relayed)\b"
    r"|(?:delivered|relayed) successfully|successful(?:ly)? deliver"
    r"|deliver(?:y|ed) (?:to the following recipients? )?(?:was |has )?succeeded"
    r"|delivery status notification \(success\)|return receipt",
    needles=("deliver", "relayed", "receipt"),
)
_FAILURE = Phrase(
    r"fail|undeliver|not (?:be )?delivered|n't be delivered|could not|couldn't|unable"
    r"|reject|refused|denied|unknown|error|bounced|returned|expired|giving up|gave up"
    r"|permanent|fatal|delay|deferred|no such|does not exist|invalid|quota|blocked|[45]\.\d+\.\d+"
)
_DELAY_SUBJECT = re.compile(r"\bdelay|\bwarning\b|deferred|still trying", re.IGNORECASE)
_FAILED_SUBJECT = re.compile(r"fail|undeliver|returned|not delivered", re.IGNORECASE)
_SKIP_LINE = re.compile(
    r"^[\s>]*(?:from|to|cc|reply-to|return-path|sender|received|message-id|references|in-reply-to"
    r"|date|x-[\w-]+|dkim-signature|authentication-results|list-\w+|errors-to)\s*:",
    re.IGNORECASE,
)
NOTICE_CHARS = 1000
_RECIPIENT_HEADER = re.compile(r"^(?:to|cc):(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_CONTACTS = {"postmaster", "support", "abuse", "help", "hostmaster", "webmaster", "admin"}
_FROM_BEFORE = re.compile(r"\b(?:from|sender|by|for)\s*[<\[(]?\s*$", re.IGNORECASE)
_SIGNAL = re.compile(
    r"\b[245]\.\d{1,3}\.\d{1,3}\b|\b[45]\d\d\b|unknown|not (?:found|recognized|exist)|"
    r"does not|doesn't|invalid|reject|refused|denied|fail|error|full|quota|unavailable|"
    r"disabled|blocked|expired|timed? ?out|no such|unable|could not|couldn't",
    re.IGNORECASE,
)
_ANGLE_NEXT = re.compile(r"[ \t]*<(?:mailto:)?([^<>\s@:]+@[^<>\s]+)>", re.IGNORECASE)
_NEAR_MESSAGE_ID = re.compile(r"message[- ]?id|msgid|queue id", re.IGNORECASE)

Block = tuple[str, str]  # (failed address, the text the notice wrote about it)


def looks_automatic(mail: Mail) -> bool:
    """Whether a mail system, not a person, sent ``mail``: its sender, subject or headers say so.

    A family's marks quoted in a person's message ("see the bounce below") must not make it one.
    """
    return (
        mail.from_daemon
        or SUBJECT.search(mail.subject) is not None
        or mail.header("auto-submitted").lower().startswith("auto-")
    )


def finding(mail: Mail, detector: str, blocks: list[Block]) -> Finding | None:
    """A family's blocks as a Finding, or the common-shape reading when the blocks are empty."""
    hits = build_hits(mail, blocks) if blocks else read_hits(mail)
    return finding_of(mail, detector, hits)


def finding_of(mail: Mail, detector: str, hits: Sequence[Hit]) -> Finding | None:
    """``hits`` as a Finding of the notice's kind; a success notice's recipients were delivered."""
    if not hits:
        return None
    kind = kind_of(mail)
    if kind == "delivered":
        hits = [replace(h, action="delivered") for h in hits]
    return Finding(kind=kind, detector=detector, hits=tuple(hits))


def kind_of(mail: Mail) -> str:
    """``delayed`` for a warning that the mail system is still trying, ``delivered`` for a
    success notice that writes no failure at all, else ``bounce``."""
    text = mail.subject + "\n" + mail.body
    # Failure wording first: nearly every notice has some near its top, which settles it at
    # once; the success phrases would be looked for all through the text.
    if not _FAILURE.found(text) and _SUCCESS.found(text):
        return "delivered"
    if _DELAY_SUBJECT.search(mail.subject) and not _FAILED_SUBJECT.search(mail.subject):
        return "delayed"  # "Delivery Status Notification (Delay)": the subject is explicit
    return "delayed" if _DELAY.search(text) and not FINAL.search(text) else "bounce"


def build_hits(mail: Mail, blocks: list[Block]) -> list[Hit]:
    """One hit per distinct address; codes come from its own text, else from the whole notice."""
    notice = mail.body
    flat: str | None = None
    hits: list[Hit] = []
    seen: set[str] = set()
    for raw_address, text in blocks:
        address = raw_address.lower().strip(".")
        if address in seen:
            continue
        seen.add(address)
        window = " ".join(text.split())
        if not _SIGNAL.search(ADDRESS.sub("", window)):
            # Only the address is listed (Notes, SMS gateways): the notice itself is the reason.
            flat = flat if flat is not None else " ".join(notice.split())[:NOTICE_CHARS]
            window = flat
        status = find_status(window, failures_only=True) or find_status(notice, failures_only=True)
        action = "failed"
        if status and status[0] == "4" and not FINAL.search(notice):
            action = "delayed"
        hits.append(
            Hit(
                address=address,
                status=status,
                reply_code=find_reply_code(window) or find_reply_code(notice),
                action=action,
                diagnostic=window,
                command=find_command(window) or find_command(notice),
            )
        )
    return hits


def paragraphs_after(lines: list[str], starts: re.Pattern[str], *, limit: int = 12) -> list[Block]:
    """Blocks that open on a line matching ``starts`` (group 1: the address) and run to a blank.

    qmail, Yahoo and Postfix write ``<a@b>:`` and then the remote server's reply.
    """
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        found = starts.match(line)
        if found is None:
            continue
        out = [line]
        for follow in lines[index + 1 : index + limit]:
            if not follow.strip() or starts.match(follow):
                break
            out.append(follow)
        blocks.append((found.group(1), "\n".join(out)))
    return blocks


def read_hits(mail: Mail) -> list[Hit]:
    """The common shape: every address the notice text is about, with the reply nearest it."""
    found = _most_likely(_addresses(mail), mail.body.split("\n"), mail)
    if not found:
        return []
    lines = mail.body.split("\n")
    blocks: list[Block] = []
    for position, (address, index) in enumerate(found):
        end = found[position + 1][1] if position + 1 < len(found) else len(lines)
        blocks.append((address, window(lines, index, max(end, index + 1))))
    return build_hits(mail, blocks)


def header_addresses(mail: Mail, *names: str) -> set[str]:
    """Every address in the named top-level headers, lower-cased."""
    return {a.lower() for name in names for a in ADDRESS.findall(mail.header(name))}


def _addresses(mail: Mail) -> list[tuple[str, int]]:
    excluded = header_addresses(mail, "from", "return-path")
    lines = mail.body.split("\n")
    found: list[tuple[str, int]] = []
    # Exim and Google name the failed addresses in a header; trust it over the prose.
    failed = [a.lower() for a in ADDRESS.findall(mail.header("x-failed-recipients"))]
    matches = [
        (index, line, match)
        for index, line in enumerate(lines)
        if "@" in line and not _SKIP_LINE.match(line)
        for match in ADDRESS.finditer(line)
    ]
    # "a@b <c@d>": an address written as the display name of another is no mailbox (RFC 5322
    # name-addr), wherever else the notice repeats it.
    excluded |= {shown for _, line, m in matches if (shown := _display_name(line, m)) is not None}
    for index, line, match in matches:
        address = match.group(0).lower().strip(".")
        if address in excluded or (failed and address not in failed):
            continue
        if _incidental(line, match) or any(address == a for a, _ in found):
            continue
        found.append((address, index))
    for address in failed:
        if all(address != a for a, _ in found):
            found.append((address, len(lines)))
    return found


def _display_name(line: str, match: re.Match[str]) -> str | None:
    """The address ``match`` when the line writes it as the display name of another address."""
    angle = _ANGLE_NEXT.match(line, match.end())
    shown = match.group(0).lower().strip(".")
    return shown if angle is not None and angle.group(1).lower() != shown else None


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
    original_to = original_recipients(mail.original)

    def reported(address: str, index: int) -> bool:
        beside = " ".join(lines[index : index + 2])
        return address in original_to or bool(_SIGNAL.search(beside))

    # The notice goes to the original sender, so its own To names the sender, not a recipient.
    ours = header_addresses(mail, "to", "cc", "reply-to", "delivered-to")
    people = [(a, i) for a, i in found if a.partition("@")[0] not in _CONTACTS and a not in ours]
    kept = [(a, i) for a, i in people if reported(a, i)]
    return kept or people or found


def original_recipients(text: str) -> set[str]:
    """The To and Cc addresses of the returned message's header block."""
    head = text.lstrip("\n").partition("\n\n")[0]
    found: set[str] = set()
    for match in _RECIPIENT_HEADER.finditer(head):
        found.update(a.lower() for a in ADDRESS.findall(match.group(1)))
    return found


def window(lines: list[str], start: int, end: int) -> str:
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
