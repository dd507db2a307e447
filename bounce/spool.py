"""EDGE: returned mail kept on disk, for ``dunmail bounce ingest``: a Maildir, an mbox, a directory
of message files or one file. The live sources are bounce/inbound_smtp.py and bounce/imap.py.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from pathlib import Path


def read_paths(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    """(source, raw bytes) for every message under ``paths``: a Maildir directory (its ``cur/``
    and ``new/``), a directory of files, an mbox file, or a single message file."""
    for path in paths:
        if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
            maildir = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(maildir.keys()):
                with maildir.get_file(key) as handle:
                    yield f"maildir:{path.name}/{key}", handle.read()
        elif path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_file()):
                yield f"file:{child.name}", child.read_bytes()
        elif _is_mbox(path):
            box = mailbox.mbox(path, factory=None, create=False)
            for number, key in enumerate(box.keys()):
                yield f"mbox:{path.name}#{number}", box.get_bytes(key)
        else:
            yield f"file:{path.name}", path.read_bytes()


def count_messages(paths: Iterable[Path]) -> int | None:
    """How many messages :func:`read_paths` will yield (for a progress bar), or None when
    that would mean reading an mbox twice."""
    total = 0
    for path in paths:
        if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
            total += sum(1 for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file())
        elif path.is_dir():
            total += sum(1 for p in path.iterdir() if p.is_file())
        elif _is_mbox(path):
            return None
        else:
            total += 1
    return total


def _is_mbox(path: Path) -> bool:
    # An mbox starts with a "From " separator line (RFC 4155); a single message never does.
    with path.open("rb") as handle:
        return handle.read(5) == b"From "
