"""The few Structured Field (RFC 8941) shapes the provider's signature headers use, parsed strictly.

The verifier needs the member's text exactly as sent, because the ``@signature-params`` line of the
signature base is that text: re-serialising a parsed value could differ from what the sender signed (and
then a valid signature fails, or a lenient parse accepts what the sender never wrote). So this splits a
dictionary into members without rewriting them and parses only what it must: an inner list of strings
with parameters, and a byte sequence.
"""

from __future__ import annotations

import base64
import re

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*\Z")
_INTEGER = re.compile(r"-?[0-9]{1,15}\Z")


class ParseError(ValueError):
    pass


def _string_end(text: str, start: int) -> int:
    """Index just past the quoted string starting at ``start``."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in '"\\':
                raise ParseError("bad escape in a string")
            i += 2
            continue
        if c == '"':
            return i + 1
        if not (" " <= c <= "~"):
            raise ParseError("a string holds a character outside printable ASCII")
        i += 1
    raise ParseError("unterminated string")


def _unquote(text: str) -> str:
    return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def dictionary_members(value: str) -> list[tuple[str, str]]:
    """The members of a dictionary field, each as (key, the value's text as sent)."""
    members: list[tuple[str, str]] = []
    depth, start, i = 0, 0, 0
    pieces: list[str] = []
    while i < len(value):
        c = value[i]
        if c == '"':
            i = _string_end(value, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            pieces.append(value[start:i])
            start = i + 1
        i += 1
    pieces.append(value[start:])
    for piece in pieces:
        key, sep, member = piece.strip(" \t").partition("=")
        if not sep or not _KEY.match(key) or not member:
            raise ParseError(f"not a dictionary member: {piece.strip()[:40]!r}")
        if any(k == key for k, _ in members):
            raise ParseError(f"member {key!r} given twice")
        members.append((key, member))
    return members


def inner_list(text: str) -> tuple[list[str], dict[str, int | str]]:
    """An inner list of strings and its parameters: ``("a" "b");k="v";n=1``."""
    if not text.startswith("("):
        raise ParseError("expected an inner list")
    items: list[str] = []
    i = 1
    while True:
        if i >= len(text):
            raise ParseError("unterminated inner list")
        if text[i] == ")":
            i += 1
            break
        if text[i] == " ":
            i += 1
            continue
        if text[i] != '"':
            raise ParseError("component names must be quoted strings")
        end = _string_end(text, i)
        items.append(_unquote(text[i:end]))
        i = end
        if i < len(text) and text[i] not in " )":
            raise ParseError("items must be separated by a space")
    params: dict[str, int | str] = {}
    while i < len(text):
        if text[i] != ";":
            raise ParseError(f"unexpected {text[i]!r} after the inner list")
        i += 1
        eq = text.find("=", i)
        if eq < 0:
            raise ParseError("a parameter without a value")
        name = text[i:eq]
        if not _KEY.match(name) or name in params:
            raise ParseError(f"bad or repeated parameter name {name[:20]!r}")
        i = eq + 1
        if i < len(text) and text[i] == '"':
            end = _string_end(text, i)
            params[name] = _unquote(text[i:end])
            i = end
        else:
            end = text.find(";", i)
            end = len(text) if end < 0 else end
            raw = text[i:end]
            if not _INTEGER.match(raw):
                raise ParseError(f"parameter {name} is neither a string nor an integer")
            params[name] = int(raw)
            i = end
    return items, params


def byte_sequence(text: str) -> bytes:
    text = text.strip(" \t")
    if len(text) < 2 or text[0] != ":" or text[-1] != ":":
        raise ParseError("expected a byte sequence, :<base64>:")
    try:
        return base64.b64decode(text[1:-1], validate=True)
    except ValueError:
        raise ParseError("the byte sequence is not base64") from None
