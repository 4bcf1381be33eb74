"""A run's batches not yet acknowledged by the gateway, in order, on local disk.

Every batch is written here before it is sent and forgotten once the gateway says it
stored it, so a gateway restart or a network cut of minutes loses nothing: when the
stream is back, what is here is sent again, in order (the gateway stores each epoch and
point once, so a batch it had already stored costs nothing). Only offsets stay in
memory; a long outage costs disk, not the training process's memory.

Hand-written: a length-prefixed append-only file is the whole mechanism (sqlite or a
queue library would add a dependency to every training script for these few lines).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

_LENGTH = struct.Struct("<Q")  # each record: its sequence and its length, then its bytes
# Once everything written has been acknowledged, a file this large starts again empty.
_RESTART_BYTES = 16 * 1024 * 1024


class Spool:
    def __init__(self, directory: Path | None = None, prefix: str = "run") -> None:
        folder = directory or Path(tempfile.gettempdir()) / "metalearn-spool"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".spool", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b")
        # (sequence, offset, length) of each batch not yet acknowledged, in order.
        self._pending: deque[tuple[int, int, int]] = deque()
        self._end = 0

    def __len__(self) -> int:
        return len(self._pending)

    def append(self, sequence: int, data: bytes) -> None:
        self._file.seek(self._end)
        self._file.write(_LENGTH.pack(sequence) + _LENGTH.pack(len(data)) + data)
        # To the operating system at once: a gateway that restarts must not find a batch
        # still in this process's buffer when the stream is back.
        self._file.flush()
        self._pending.append((sequence, self._end + 2 * _LENGTH.size, len(data)))
        self._end += 2 * _LENGTH.size + len(data)

    def acknowledge(self, sequence: int) -> None:
        """The gateway stored every batch up to `sequence`."""
        while self._pending and self._pending[0][0] <= sequence:
            self._pending.popleft()
        if not self._pending and self._end > _RESTART_BYTES:
            self._file.truncate(0)
            self._end = 0

    def pending(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """The batches not yet acknowledged with a sequence above `after`, in order."""
        for sequence, offset, length in list(self._pending):
            if sequence <= after:
                continue
            self._file.seek(offset)
            yield sequence, self._file.read(length)

    def close(self, keep: bool = False) -> None:
        self._file.close()
        if not keep:
            self.path.unlink(missing_ok=True)
