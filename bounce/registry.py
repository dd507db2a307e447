"""DETECTORS: every detector, in one ordered list, most authoritative first."""

from __future__ import annotations

from bounce.detectors.arf import ARFDetector
from bounce.detectors.autoreply import AutoReplyDetector
from bounce.detectors.base import Detector
from bounce.detectors.dsn import DSNDetector
from bounce.detectors.googlegroups import GoogleGroupsDetector
from bounce.detectors.heuristics import TextBounceDetector
from bounce.detectors.sesjson import SESJSONDetector

# Structured formats first: a JSON notice or an RFC 5965/3464 part states its facts; an
# automatic reply is ruled in before the prose readers could mistake its text for a bounce;
# provider families before the generic prose reader, which is the last resort.
DETECTORS: list[Detector] = [
    SESJSONDetector(),
    ARFDetector(),
    DSNDetector(),
    AutoReplyDetector(),
    GoogleGroupsDetector(),
    TextBounceDetector(),
]
