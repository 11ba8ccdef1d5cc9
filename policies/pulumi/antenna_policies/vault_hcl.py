"""Reads Vault policy documents (HCL or JSON) into `path pattern -> capabilities`, enough to judge them.

No HCL library is among the project's dependencies, and Vault policies use a small subset: `path "..." { ... }`
blocks of attributes, lists and nested maps.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<heredoc><<-?(?P<tag>[A-Za-z_]+)\n.*?\n\s*(?P=tag)\b)
  | (?P<punct>[{}\[\]=,:])
  | (?P<word>[A-Za-z0-9_.+\-*/]+)
    """,
    re.VERBOSE | re.DOTALL,
)


class PolicyParseError(ValueError):
    """The document is neither HCL of the shape Vault reads nor JSON."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            line = text.count("\n", 0, pos) + 1
            raise PolicyParseError(f"line {line}: unexpected {text[pos : pos + 20]!r}")
        kind = match.lastgroup if match.lastgroup != "tag" else "heredoc"
        if kind == "string":
            tokens.append(("string", json.loads(match.group())))
        elif kind in ("punct", "word"):
            tokens.append((kind, match.group()))
        elif kind == "heredoc":
            tokens.append(("string", match.group()))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise PolicyParseError(f"expected {value or 'more'}, found {token[1] if token else 'end'}")
        self.pos += 1
        return token

    def body(self, closing: str | None) -> list[tuple[str, list[str], Any]]:
        """Items `(name, labels, value)`; a block's value is its own body."""
        items: list[tuple[str, list[str], Any]] = []
        while (token := self.peek()) is not None and token[1] != closing:
            kind, name = self.take()
            if kind not in ("word", "string"):
                raise PolicyParseError(f"unexpected {name!r}")
            labels = []
            while (nxt := self.peek()) is not None and nxt[0] == "string":
                labels.append(self.take()[1])
            nxt = self.peek()
            if nxt is not None and nxt[1] in ("=", ":"):
                self.take()
                items.append((name, labels, self.value()))
            else:
                self.take("{")
                items.append((name, labels, self.body("}")))
                self.take("}")
            if (nxt := self.peek()) is not None and nxt[1] == ",":
                self.take()
        if closing is None and self.peek() is not None:
            raise PolicyParseError("unexpected text after the last block")
        return items

    def value(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return text
        if text == "[":
            values = []
            while (token := self.peek()) is not None and token[1] != "]":
                values.append(self.value())
                if (nxt := self.peek()) is not None and nxt[1] == ",":
                    self.take()
            self.take("]")
            return values
        if text == "{":
            items = self.body("}")
            self.take("}")
            return {name: value for name, _labels, value in items}
        return text


def capabilities_by_path(text: str) -> dict[str, list[str]]:
    """`{path pattern: capabilities}` of a Vault policy. Raises PolicyParseError on other text."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise PolicyParseError(f"not JSON: {exc}") from exc
        paths = document.get("path", {}) if isinstance(document, dict) else {}
        return {
            str(pattern): [str(c) for c in (rules or {}).get("capabilities", [])] for pattern, rules in paths.items()
        }
    result: dict[str, list[str]] = {}
    for name, labels, value in _Parser(_tokens(text)).body(None):
        if name != "path" or len(labels) != 1 or not isinstance(value, list):
            continue
        for attribute, _labels, attr_value in value:
            if attribute == "capabilities" and isinstance(attr_value, list):
                result.setdefault(labels[0], []).extend(str(c) for c in attr_value)
            elif attribute == "policy" and isinstance(attr_value, str):
                # The pre-0.9 shorthand: `policy = "sudo"` and friends.
                result.setdefault(labels[0], []).append(attr_value)
    return result


def pattern_matches(pattern: str, path: str) -> bool:
    """Vault's path matching: `+` stands for one segment, a trailing `*` for any suffix."""
    regex = "".join(
        "[^/]+" if segment == "+" else re.escape(segment)
        for segment in re.split(r"(?<![^/])(\+)(?![^/])", pattern.removesuffix("*"))
    )
    return re.fullmatch(regex + (".*" if pattern.endswith("*") else ""), path) is not None
