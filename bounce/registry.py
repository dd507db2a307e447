"""DETECTORS: every detector, in one ordered list, most authoritative first."""

from __future__ import annotations

from bounce.detectors.arf import ARFDetector
from bounce.detectors.autoreply import AutoReplyDetector
from bounce.detectors.base import Detector
from bounce.detectors.domino import DominoDetector
from bounce.detectors.dragonfly import DragonFlyDetector
from bounce.detectors.dsn import DSNDetector
from bounce.detectors.exchange import ExchangeDetector
from bounce.detectors.exim import EximDetector
from bounce.detectors.fml import FMLDetector
from bounce.detectors.gmail import GmailDetector
from bounce.detectors.googlegroups import GoogleGroupsDetector
from bounce.detectors.heuristics import TextBounceDetector
from bounce.detectors.json_event import JSONEventDetector
from bounce.detectors.postfix import PostfixDetector
from bounce.detectors.qmail import QmailDetector
from bounce.detectors.sendmail import SendmailDetector
from bounce.detectors.yahoo import YahooDetector

# Structured formats first: a JSON notice or an RFC 3464/5965 part states its facts. An
# automatic reply is ruled in before the prose readers could mistake its text for a bounce.
# Then the text families, each claiming only notices that carry its own marks: providers whose
# notice is built on an MTA's layout come before that MTA (Yahoo before qmail). The generic
# prose reader is the last resort, for mail systems no family knows.
DETECTORS: list[Detector] = [
    JSONEventDetector(),
    ARFDetector(),
    DSNDetector(),
    AutoReplyDetector(),
    GoogleGroupsDetector(),
    GmailDetector(),
    ExchangeDetector(),
    DominoDetector(),
    EximDetector(),
    YahooDetector(),
    QmailDetector(),
    PostfixDetector(),
    SendmailDetector(),
    DragonFlyDetector(),
    FMLDetector(),
    TextBounceDetector(),
]


def without_families(*families: str) -> list[Detector]:
    """The registry with the detectors written for any of ``families`` left out, order kept.

    What decoding a family's notices would look like had nobody written a module for it.
    """
    return [d for d in DETECTORS if not set(d.families) & set(families)]


def generic_only() -> list[Detector]:
    """The registry with every family's own detector left out: the standards and prose alone."""
    return [d for d in DETECTORS if not d.families]
