"""``python -m tests.paged_operator ARGS``: ``webhookcerts ARGS`` with Kopf's initial LIST and the Secret
reflector's in pages of ``PAGE`` objects, each page logged, so a test with a handful of objects sees the
listing paged as it is with thousands (handlers/rawbodies.py: pages of ``LIST_PAGE``;
kube/secretinformer.py: ``PAGE``, which logs its pages itself at debug level)."""

from __future__ import annotations

import logging
import runpy
import sys
from collections.abc import AsyncIterator, Collection
from typing import Any

from kopf._cogs.clients import fetching  # Kopf's paged LIST, as its watcher calls it

from webhookcerts.handlers import rawbodies
from webhookcerts.kube import secretinformer

PAGE = 2
logger = logging.getLogger(__name__)
_fetch_objs = fetching.fetch_objs


async def logged_pages(**kwargs: Any) -> AsyncIterator[tuple[Collection[Any], str]]:
    async for items, resource_version in _fetch_objs(**kwargs):
        logger.info("listed a page of %d %s", len(items), kwargs["resource"].plural)
        yield items, resource_version


def main() -> None:
    rawbodies.LIST_PAGE = PAGE
    secretinformer.PAGE = PAGE
    fetching.fetch_objs = logged_pages
    sys.argv = ["webhookcerts", *sys.argv[1:]]
    runpy.run_module("webhookcerts", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
