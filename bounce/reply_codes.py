"""PURE: the reply-code layer's table: what an RFC 5321 reply code alone says about a failure.

A reply code is coarser than an enhanced status code and than the wording, so this layer speaks
only when both are silent (``bounce.classify.PRECEDENCE``). Only codes whose RFC text names one
cause are here; 550 ("mailbox unavailable": not found, no access, or policy) and 554
("transaction failed") name none, so they add nothing of their own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplyRow:
    """One reply code; ``commands`` limits it to replies to those SMTP commands, if given."""

    code: int
    reason: str
    source: str
    commands: frozenset[str] | None = None

    @property
    def id(self) -> str:
        where = "/" + ",".join(sorted(self.commands)) if self.commands else ""
        return f"reply:{self.code}{where}"


_GREETING = frozenset({"CONNECT", "EHLO", "HELO"})

REPLY_ROWS: tuple[ReplyRow, ...] = (
    # RFC 5321 s3.1 / s4.2.3: 421 and 554 in the greeting refuse the client itself.
    ReplyRow(421, "blocked", "rfc5321", _GREETING),
    ReplyRow(554, "blocked", "rfc5321", _GREETING),
    ReplyRow(451, "systemerror", "rfc5321"),  # local error in processing
    ReplyRow(452, "systemfull", "rfc5321"),  # insufficient system storage
    ReplyRow(552, "mailboxfull", "rfc5321"),  # exceeded storage allocation
    ReplyRow(553, "userunknown", "rfc5321", frozenset({"RCPT"})),  # mailbox name not allowed
    ReplyRow(553, "rejected", "rfc5321", frozenset({"MAIL"})),
    ReplyRow(500, "syntaxerror", "rfc5321"),  # syntax error, command unrecognised
    ReplyRow(501, "syntaxerror", "rfc5321"),  # syntax error in parameters
    ReplyRow(502, "syntaxerror", "rfc5321"),  # command not implemented
    ReplyRow(503, "syntaxerror", "rfc5321"),  # bad sequence of commands
    ReplyRow(504, "syntaxerror", "rfc5321"),  # parameter not implemented
    ReplyRow(521, "notaccept", "rfc7504"),  # host does not accept mail
    ReplyRow(556, "notaccept", "rfc7504"),  # domain does not accept mail
    ReplyRow(523, "failedstarttls", "rfc5248"),  # encryption needed
    ReplyRow(524, "failedstarttls", "rfc4954"),
    ReplyRow(538, "failedstarttls", "rfc4954"),  # encryption required for the mechanism
    ReplyRow(525, "suspend", "rfc5248"),  # user account disabled
    ReplyRow(530, "securityerror", "rfc4954"),  # authentication required
    ReplyRow(534, "securityerror", "rfc4954"),  # mechanism too weak
    ReplyRow(535, "securityerror", "rfc4954"),  # credentials invalid
    ReplyRow(551, "norelaying", "rfc5321"),  # user not local (will not forward)
)
