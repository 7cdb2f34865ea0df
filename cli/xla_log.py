"""Keeps XLA's compiler chatter out of the terminal.

XLA's C++ logging ("Very slow compile? If you want to file a bug ...", "Constant folding an
instruction is taking > 2s ...") writes to file descriptor 2 directly, through the progress bars.
``install`` points descriptor 2 at a pipe read by a thread that appends those messages to a log
file and passes every other line on; Python's own ``sys.stderr`` (the progress bars, errors,
warnings) is re-pointed at the original terminal and never goes through the pipe. At exit the
terminal gets one line naming the log when anything was kept out. ``RCIG_RELEASE_XLA_LOG`` sets
the log file; ``-`` leaves XLA's messages on the terminal.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading
from pathlib import Path

# an XLA/absl log line: "2024-06-17 11:40:02.931165: E external/xla/...] " (TSL) or
# "E1207 05:31:02.123456   12345 file.cc:73] " (absl)
_PREFIX = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] |[IWE]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\])"
)
# lines of the multi-line messages that follow such a line
_BODY = (
    "Very slow compile",
    "[Compiling module",
    "The operation took",
    "This isn't necessarily a bug",
    "If you'd like to file a bug",
    "Constant folding an instruction",
)


_installed = False


class ChatterFilter:
    """Decides, line by line, whether a line of descriptor 2 is XLA chatter (kept out)."""

    def __init__(self) -> None:
        self.in_message = False

    def is_chatter(self, line: str) -> bool:
        text = line.rstrip("\r\n")
        if _PREFIX.match(text):
            self.in_message = True
            return True
        body = (
            not text.strip()
            or set(text.strip()) == {"*"}
            or text.startswith((" ", "\t"))
            or any(b in text for b in _BODY)
        )
        if self.in_message and body:
            return True
        self.in_message = False
        return "Very slow compile" in text or (set(text.strip()) == {"*"} and len(text) > 8)


def default_log() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rcig-release" / "xla.log"


def install() -> None:
    """Diverts XLA's chatter on descriptor 2 for the rest of the process (see the module doc)."""
    global _installed
    setting = os.environ.get("RCIG_RELEASE_XLA_LOG", "")
    if setting == "-" or _installed:  # once per process (main() may run more than once in one)
        return
    _installed = True
    log_path = Path(setting) if setting else default_log()
    try:
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        terminal = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no descriptor 2 to divert: leave everything as it is
        return
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = io.TextIOWrapper(
        os.fdopen(terminal, "wb", buffering=0, closefd=False),
        encoding=encoding,
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    kept = [0]

    def pump() -> None:
        chatter = ChatterFilter()
        log = None
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            buf = b""
            while chunk := pipe.read(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "backslashreplace")
                    if chatter.is_chatter(line):
                        kept[0] += 1
                        try:
                            if log is None:
                                log_path.parent.mkdir(parents=True, exist_ok=True)
                                log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115
                            log.write(line + "\n")
                            log.flush()
                        except OSError:
                            pass
                    else:
                        os.write(terminal, raw + b"\n")
            if buf:
                os.write(terminal, buf)
        if log is not None:
            log.close()

    thread = threading.Thread(target=pump, name="xla-log", daemon=True)
    thread.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
            os.dup2(terminal, 2)  # the pipe's last write end in this process: the pump drains
        except OSError:
            return
        thread.join(timeout=2.0)
        if kept[0]:
            os.write(
                terminal,
                f"({kept[0]} line(s) of XLA compiler messages kept out of the terminal: "
                f"{log_path})\n".encode(encoding, "backslashreplace"),
            )

    atexit.register(restore)
