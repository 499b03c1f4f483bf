"""What Kopf keeps of each watched object, kept small: its listing in pages, its raw body emptied once read.

At start-up Kopf lists every WebhookCertificate (and PresentationReport), starts one worker per
object, and holds each worker, with the object's raw body, until every object has been indexed
(handlers/operator.py says why the view depends on that hold). With a thousand objects that is every
certificate's status (its certificate PEMs, conditions, history) held at once, beside the view's own
parsed copy. (The Secrets do not go through Kopf at all: kube/secretinformer.py.)

So the index functions hand the body to the view first and then empty, in Kopf's raw body, what
nothing after indexing reads: the certificate's ``spec`` and ``status``, and every object's
``metadata.managedFields``. Only the metadata stays: Kopf reads the spec only for handlers on
changes, daemons and timers, and there are none for WebhookCertificates (the event handler reads
the metadata).
The nested dicts are emptied in place, not replaced: a Kopf ``Body`` hands out its raw nested dicts,
never the top-level one, and the view has taken copies (a pass reads the view, never this body).
Deletions do not go through the index functions and keep their bodies whole.

The initial listing is read in pages (``LIST_PAGE``) rather than one response: the whole list as
bytes, as text and decoded at once is megabytes per thousand objects, for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Objects per page of Kopf's initial LIST (``settings.watching.chunk_size``).
LIST_PAGE = 100

# Top-level parts of a raw body, by kind, that nothing after the index functions reads.
READ_ONCE = {"WebhookCertificate": ("spec", "status")}


def release(body: Mapping[str, Any]) -> None:
    """Empty, in Kopf's raw body, what the view has taken and nothing else reads."""
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    for part in READ_ONCE.get(str(body.get("kind", "")), ()):
        held = body.get(part)
        if isinstance(held, dict):
            held.clear()
