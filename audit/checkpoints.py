"""Checkpoints of the audit chain, published outside the database.

The hash chain (audit/chain.py) catches an entry changed or removed in place, but not someone who
rewrites the whole table and recomputes every hash after it. A checkpoint is the chain's head at
a moment, `{"seq": …, "hash": …, "at": …}`, copied somewhere that person cannot reach: the log
(a line from the `audit.checkpoint` logger, which log shipping carries off the machine) and a file
(PORTAL_AUDIT_CHECKPOINT_FILE, one JSON line each, for a mount that is backed up elsewhere). `manage.py verify_audit --checkpoints
FILE` then checks that the chain still runs through every checkpoint in FILE.

Published every hour by a job (audit/tasks.py) and on demand (`manage.py audit_checkpoint`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from audit.models import AuditEntry

log = logging.getLogger("audit.checkpoint")


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at}, separators=(",", ":"))


def current() -> Checkpoint | None:
    """The chain's head as committed now (None while the trail is empty)."""
    head = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "hash").first()
    if head is None:
        return None
    return Checkpoint(seq=head[0], hash=head[1], at=timezone.now().isoformat(timespec="seconds"))


def publish() -> Checkpoint | None:
    """Publish the head to the log and the checkpoint file; returns it."""
    checkpoint = current()
    if checkpoint is None:
        return None
    log.info("%s", checkpoint.to_json())
    if settings.PORTAL_AUDIT_CHECKPOINT_FILE:
        with Path(settings.PORTAL_AUDIT_CHECKPOINT_FILE).open("a", encoding="utf-8") as file:
            file.write(checkpoint.to_json() + "\n")
    return checkpoint


class BadCheckpointFile(ValueError):
    pass


def read(path: str) -> list[tuple[int, str]]:
    """(seq, hash) of each checkpoint in a file of JSON lines; other lines of a log are skipped,
    so a log file can be given as it is."""
    found = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadCheckpointFile(f"Cannot read {path}: {exc.strerror}.") from exc
    for number, line in enumerate(lines, 1):
        start = line.find('{"seq":')
        if start < 0:
            continue
        try:
            data = json.loads(line[start:])
            found.append((int(data["seq"]), str(data["hash"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadCheckpointFile(f"Line {number} of {path} is not a checkpoint: {line[:120]}") from exc
    if not found:
        raise BadCheckpointFile(f"{path} holds no checkpoints (lines like {{\"seq\": 12, \"hash\": \"…\"}}).")
    return found
