"""The Secret reflector's reading of a watch response: one JSON event a line, whatever the chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from webhookcerts.kube import secretinformer


class Chunked:
    """A response whose body arrives in the chunks given (as a chunked watch response does)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.chunks


def events(*chunks: bytes) -> list[dict[str, Any]]:
    return list(secretinformer._lines(cast(Any, Chunked(*chunks))))


def test_events_split_across_chunks_and_several_in_one_come_out_whole() -> None:
    one = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a"}}}).encode()
    two = json.dumps({"type": "DELETED", "object": {"metadata": {"name": "b"}}}).encode()
    body = one + b"\n" + two + b"\n"
    for cut in range(1, len(body)):
        assert [e["type"] for e in events(body[:cut], body[cut:])] == ["ADDED", "DELETED"], cut
    assert [e["type"] for e in events(body)] == ["ADDED", "DELETED"]


def test_a_last_event_without_its_newline_and_blank_lines_are_read_as_sent() -> None:
    assert events(b'\n{"type": "BOOKMARK", "object": {}}') == [{"type": "BOOKMARK", "object": {}}]
