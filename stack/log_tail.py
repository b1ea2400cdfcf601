"""Follow the stack's log files and print their lines as one stream, each with its service's name.

supervisord writes each service's output to ``<state>/logs/<name>.log`` (and
rotates it); ``make run`` shows them all in the foreground, as honcho did,
each line prefixed with the time and the service, the stack's own lines
among them.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

POLL_SECONDS = 0.1
"""How often the files are checked for new lines."""

SUPERVISORD_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
"""supervisord's own date and time at the start of its lines: the printer adds the time already."""


class Printer:
    """Write prefixed lines to one stream, one line at a time, from any thread."""

    def __init__(self, stream: TextIO = sys.stdout, width: int = 10):
        self.stream = stream
        self.width = width
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        """Print text (one or more lines) under name."""
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            for part in text.splitlines() or [""]:
                self.stream.write(f"{stamp} {name:<{self.width}} | {part}\n")
            self.stream.flush()


@dataclass
class _Followed:
    inode: int
    offset: int = 0
    partial: bytes = b""


class LogTail:
    """Print every complete line of the ``*.log`` files in a directory, as they are written."""

    def __init__(self, directory: Path, printer: Printer):
        self.directory = directory
        self.printer = printer
        self._files: dict[Path, _Followed] = {}

    def poll(self, final: bool = False) -> None:
        """Print what was added since the last poll; final also prints unfinished last lines."""
        for path in sorted(self.directory.glob("*.log")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # rotated away between the listing and now
            followed = self._files.get(path)
            if followed is None or followed.inode != stat.st_ino or stat.st_size < followed.offset:
                # New, or rotated (a new file under the same name), or truncated: read it from the start.
                followed = self._files[path] = _Followed(stat.st_ino)
            if stat.st_size > followed.offset:
                with open(path, "rb") as f:
                    f.seek(followed.offset)
                    data = f.read(stat.st_size - followed.offset)
                followed.offset += len(data)
                self._emit(path, followed, data, final)
            elif final and followed.partial:
                self._emit(path, followed, b"", final)

    def _emit(self, path: Path, followed: _Followed, data: bytes, final: bool) -> None:
        lines = (followed.partial + data).split(b"\n")
        followed.partial = b"" if final else lines.pop()
        name = path.name[: -len(".log")]
        for raw in lines:
            if not raw and final:
                continue
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if name == "supervisord":
                text = SUPERVISORD_STAMP.sub("", text)
            self.printer.line(name, text)

    def follow(self, stop: threading.Event) -> None:
        """Print lines as they come until stop is set, then what is left."""
        while not stop.is_set():
            self.poll()
            stop.wait(POLL_SECONDS)
        self.poll(final=True)


def last_line(path: Path, limit: int = 8192) -> str:
    """The last non-empty line of a file ('' if none): what a service said before it died."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""
