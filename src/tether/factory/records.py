"""The manufacturing log: one JSON line per device the station made.

The log is what a factory hands to the cloud operator and what an auditor reads, so it is
append-only and flushed to disk (``fsync``) record by record: a crash mid-batch loses at most
the device being made, never one that was reported done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from tether.errors import InvalidInputError, StorageError


@dataclass(frozen=True)
class ManufacturingRecord:
    """What the station writes for one device. No secret, no PII: a serial and fingerprints."""

    serial: str
    certificate_fingerprint: str
    certificate_serial_number: str
    issuer_fingerprint: str
    key_location: str
    made_at: datetime

    def to_json(self) -> str:
        data = asdict(self)
        data["made_at"] = self.made_at.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> ManufacturingRecord:
        try:
            data = json.loads(line)
            data["made_at"] = datetime.fromisoformat(data["made_at"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInputError(
                f"not a manufacturing record: {exc}", code="factory_log_corrupt"
            ) from exc


class ManufacturingLog:
    """An append-only JSON-lines file of ``ManufacturingRecord``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: ManufacturingRecord) -> None:
        """Append one record and make it durable before returning."""
        line = (record.to_json() + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(
                f"cannot append to the manufacturing log {self.path}: {exc}; check that its "
                "directory exists and is writable",
                code="factory_log_unwritable",
            ) from exc

    def __iter__(self) -> Iterator[ManufacturingRecord]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield ManufacturingRecord.from_json(line)
                except InvalidInputError as exc:
                    raise InvalidInputError(
                        f"{self.path}:{number}: {exc.message}; repair or restore the log "
                        "before making more units",
                        code="factory_log_corrupt",
                    ) from exc

    def serials(self) -> set[str]:
        """Every serial the log records, to refuse making the same device twice."""
        return {record.serial for record in self}
