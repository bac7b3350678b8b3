"""Where things are in a TOML text: tomllib reports no positions for valid documents.

:class:`TomlLines` scans a document (that tomllib has already accepted) once and records
the line of every table header and of every key, so that a semantic error about the
second ``[[flow]]``'s ``esp_proposals`` can be reported at its own line. The scanner
tracks strings (all four kinds), comments and brackets; it never raises and, given text
it misreads, only falls back to a less precise line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass
class TableLines:
    """One table of the document: its header line and the first line of each of its keys."""

    name: str
    line: int
    keys: dict[str, int] = field(default_factory=dict)

    def key(self, key: str) -> int:
        return self.keys.get(key, self.line)


class TomlLines:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.top = TableLines("", 1)
        self._arrays: dict[str, list[TableLines]] = {}
        self._scan()

    # -- queries -------------------------------------------------------------------

    def array_table(self, name: str, index: int) -> TableLines | None:
        """The ``index``-th (from 0) ``[[name]]`` table, if it was written as a header."""
        tables = self._arrays.get(name, [])
        return tables[index] if 0 <= index < len(tables) else None

    def table_or_key(self, name: str, index: int) -> TableLines:
        """The ``[[name]]`` table, or (inline ``name = [{...}]`` form) the line of ``name``."""
        table = self.array_table(name, index)
        if table is not None:
            return table
        return TableLines(name, self.top.key(name))

    def find(self, needle: str, start: int) -> int:
        """The first line at or after ``start`` that contains ``needle`` (within 200 lines)."""
        if needle:
            for number in range(max(start, 1), min(start + 200, len(self.lines)) + 1):
                if needle in self.lines[number - 1]:
                    return number
        return start

    # -- the scanner -----------------------------------------------------------------

    def _scan(self) -> None:
        current = self.top
        depth = 0  # open [ and { of a value
        multiline: str | None = None  # '"""' or "'''" while inside a multi-line string
        for number, raw in enumerate(self.lines, start=1):
            line = raw.rstrip("\r")
            pos = 0
            if multiline is None and depth == 0:
                stripped = line.lstrip()
                indent = len(line) - len(stripped)
                if not stripped or stripped.startswith("#"):
                    continue
                if stripped.startswith("["):
                    header, is_array, end = _header(stripped)
                    if header is None:
                        continue
                    table = TableLines(header, number)
                    top_name, _, rest = header.partition(".")
                    self.top.keys.setdefault(top_name, number)
                    parent = self._arrays.get(top_name, [])
                    if rest and parent:
                        # [peer.x] or [[peer.x]]: key x of the last [[peer]]
                        parent[-1].keys.setdefault(rest.split(".", 1)[0], number)
                    if is_array and not rest:
                        self._arrays.setdefault(header, []).append(table)
                    current = table
                    pos = indent + end
                else:
                    key, end = _key(stripped)
                    if key is None:
                        continue
                    current.keys.setdefault(key, number)
                    pos = indent + end
            depth, multiline = _scan_value(line, pos, depth, multiline)


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        return part[1:-1]
    return part


def _header(text: str) -> tuple[str | None, bool, int]:
    """(dotted name, is an array table, offset after the header) of a header line."""
    is_array = text.startswith("[[")
    start = 2 if is_array else 1
    closing = "]]" if is_array else "]"
    parts: list[str] = []
    i = start
    buf = ""
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            end = text.find(ch, i + 1)
            if end < 0:
                return None, False, 0
            buf += text[i : end + 1]
            i = end + 1
            continue
        if ch == ".":
            parts.append(_unquote(buf))
            buf = ""
        elif text.startswith(closing, i):
            parts.append(_unquote(buf))
            return ".".join(parts), is_array, i + len(closing)
        else:
            buf += ch
        i += 1
    return None, False, 0


def _key(text: str) -> tuple[str | None, int]:
    """(first component of the key, offset after '=') of a ``key = value`` line."""
    i = 0
    first: str | None = None
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            end = text.find(ch, i + 1)
            if end < 0:
                return None, 0
            if first is None:
                first = text[i + 1 : end]
            i = end + 1
        elif ch in _BARE_KEY:
            start = i
            while i < len(text) and text[i] in _BARE_KEY:
                i += 1
            if first is None:
                first = text[start:i]
        elif ch in " \t.":
            i += 1
        elif ch == "=":
            return first, i + 1
        else:
            return None, 0
    return None, 0


def _scan_value(line: str, pos: int, depth: int, multiline: str | None) -> tuple[int, str | None]:
    """Follow strings, comments and brackets from ``pos`` to the end of ``line``."""
    i = pos
    n = len(line)
    while i < n:
        if multiline is not None:
            end = _find_close(line, i, multiline)
            if end < 0:
                return depth, multiline
            i = end
            multiline = None
            continue
        ch = line[i]
        if ch == "#":
            break
        if ch in "\"'":
            triple = ch * 3
            if line.startswith(triple, i):
                multiline = triple
                i += 3
                continue
            end = i + 1
            while end < n and line[end] != ch:
                end += 2 if ch == '"' and line[end] == "\\" else 1
            i = end + 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, multiline


def _find_close(line: str, start: int, triple: str) -> int:
    """Offset after the closing ``triple`` (and up to two more quotes), or -1."""
    i = start
    quote = triple[0]
    while i < len(line):
        if quote == '"' and line[i] == "\\":
            i += 2
            continue
        if line.startswith(triple, i):
            i += 3
            extra = 0
            while extra < 2 and i < len(line) and line[i] == quote:
                i += 1
                extra += 1
            return i
        i += 1
    return -1
