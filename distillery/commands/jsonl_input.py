"""JSONL input for the file commands: the non-blank lines in batches, as byte blocks read
4 MiB at a time, and a line-by-line parse that keeps a malformed line's text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np

from distillery.adapters.storage import open_input

_CHUNK_BYTES = 4 << 20  # measured: 4 MiB beats 1, 2, 8 and 16 on speed, and holds less


def line_batches(uri: str, rows: int | None) -> Iterator[tuple[bytes, int]]:
    """The input's non-blank lines in batches of `rows` (the last may be shorter), or (None) the
    lines of each 4 MiB read: (the lines, each ending in a newline, as one bytes block; how many)."""
    rest = b""
    with open_input(uri, "input file") as fh:
        while True:
            data = fh.read(_CHUNK_BYTES)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                batches = _split(data[:cut], rows)
                if rows and batches and batches[-1][1] < rows:  # a partial batch waits for the next chunk
                    rest = batches.pop()[0] + rest
                yield from batches
    if rest.strip():
        yield from _split(rest if rest.endswith(b"\n") else rest + b"\n", rows)


_SPACES = b" \t\r\x0b\x0c\n"
_MAYBE_BLANK = re.compile(rb"\n[ \t\r\x0b\x0c\n]")  # a line (after the first) that starts with whitespace


def _split(block: bytes, rows: int | None) -> list[tuple[bytes, int]]:
    """A block of whole lines in batches of `rows` lines (None: one batch), blank lines left out."""
    if block[:1] in _SPACES or _MAYBE_BLANK.search(block):  # blank lines are not rows
        block = b"".join(line + b"\n" for line in block.split(b"\n") if line.strip())
    if not rows:
        count = block.count(b"\n")
        return [(block, count)] if count else []
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + 1
    out, start = [], 0
    for k in range(rows, len(ends) + rows, rows):
        last = min(k, len(ends))
        stop = int(ends[last - 1]) if last else 0
        if stop > start:
            out.append((block[start:stop], last - (k - rows)))
        start = stop
    return out


def jsonl_records(uri: str, rows: int, stats=None) -> Iterator[list[tuple[str, dict | None]]]:
    """(line, parsed record or None if malformed) in batches of `rows` non-blank lines, parsed
    line by line (the guard command's reader)."""
    for block, _ in line_batches(uri, rows):
        yield parse_lines(block, stats)


def parse_lines(block: bytes, stats=None) -> list[tuple[str, dict | None]]:
    """(line, parsed record or None if malformed), one `json.loads` a line."""
    out = []
    for raw in block.split(b"\n")[:-1]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "replace")
            if stats is not None:
                stats.non_utf8_rows += 1
        line = line.rstrip("\r\n")
        try:
            rec = json.loads(line)
            rec = rec if isinstance(rec, dict) else None
        except json.JSONDecodeError:
            rec = None
        out.append((line, rec))
    return out
