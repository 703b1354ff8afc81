"""Find the source line of every key, table and array element in a TOML text that tomllib has accepted.

tomllib returns values without positions; error messages need the line of ``waivers[1].expires``.
This is a structural scanner only: it never parses values, and it trusts the text to be valid TOML.
"""

from __future__ import annotations

Path = tuple[str | int, ...]

_BARE_KEY = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = set(",]}#\n\r")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.aot_counts: dict[Path, int] = {}

    def _peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def _mark(self, path: Path) -> None:
        for i in range(1, len(path) + 1):
            self.lines.setdefault(path[:i], self.line)

    def _skip_blank(self, newlines: bool) -> None:
        """Skip spaces, tabs and comments, and newlines too when ``newlines``."""
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t" or (newlines and ch in "\r\n"):
                self._advance()
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self._advance((len(self.text) if end < 0 else end) - self.pos)
            else:
                return

    def _string(self) -> str:
        quote = self.text[self.pos]
        if self._peek(3) == quote * 3:
            self._advance(3)
            end = self.pos
            while True:
                end = self.text.find(quote * 3, end)
                if quote == '"' and _escaped(self.text, end):
                    end += 1
                    continue
                break
            # A closing delimiter may be preceded by up to two quotes that belong to the content.
            for _ in range(2):
                if self.text[end + 3 : end + 4] == quote:
                    end += 1
            value = self.text[self.pos : end]
            self._advance(end + 3 - self.pos)
            return value
        start = self.pos + 1
        end = start
        while True:
            end = self.text.index(quote, end)
            if quote == '"' and _escaped(self.text, end):
                end += 1
                continue
            break
        self._advance(end + 1 - self.pos)
        return self.text[start:end]

    def _key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            if self._peek() in ('"', "'"):
                parts.append(self._string())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] in _BARE_KEY:
                    self.pos += 1
                parts.append(self.text[start : self.pos])
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance()

    def _value(self, path: Path) -> None:
        self._mark(path)
        ch = self._peek()
        if ch in ('"', "'"):
            self._string()
        elif ch == "[":
            self._advance()
            index = 0
            while True:
                self._skip_blank(newlines=True)
                if self._peek() == "]":
                    self._advance()
                    return
                self._value(path + (index,))
                index += 1
                self._skip_blank(newlines=True)
                if self._peek() == ",":
                    self._advance()
        elif ch == "{":
            self._advance()
            while True:
                self._skip_blank(newlines=False)
                if self._peek() == "}":
                    self._advance()
                    return
                self._key_value(path)
                self._skip_blank(newlines=False)
                if self._peek() == ",":
                    self._advance()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1

    def _key_value(self, table: Path) -> None:
        path = table + tuple(self._key())
        self._mark(path)
        self._skip_blank(newlines=False)
        self._advance()  # the "="
        self._skip_blank(newlines=False)
        self._value(path)

    def _resolve(self, parts: list[str]) -> Path:
        """Insert the current index after every prefix that names an array of tables."""
        out: Path = ()
        for part in parts:
            out += (part,)
            if out in self.aot_counts:
                out += (self.aot_counts[out] - 1,)
        return out

    def _header(self) -> Path:
        is_array = self._peek(2) == "[["
        self._advance(2 if is_array else 1)
        parts = self._key()
        self._advance(2 if is_array else 1)
        if not is_array:
            path = self._resolve(parts)
        else:
            parent = self._resolve(parts[:-1]) + (parts[-1],)
            self.aot_counts[parent] = self.aot_counts.get(parent, 0) + 1
            path = parent + (self.aot_counts[parent] - 1,)
        self._mark(path)
        return path

    def scan(self) -> dict[Path, int]:
        table: Path = ()
        while True:
            self._skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return self.lines
            if self._peek() == "[":
                table = self._header()
            else:
                self._key_value(table)


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def key_lines(text: str) -> dict[Path, int]:
    """Map every key path (tables, dotted keys, inline tables, array elements) to its 1-based line."""
    return _Scanner(text).scan()


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its longest prefix present in the source; None for an empty match."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
