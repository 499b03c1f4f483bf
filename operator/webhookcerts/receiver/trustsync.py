"""trust-sync: mirror the trust Secret into a directory in the kubelet's atomic layout, quickly.

The kubelet refreshes mounted Secrets on its sync period plus its cache TTL, up to a minute or two.
For an emergency rotation that is too slow, so this sidecar watches the Secret through the API and
writes each new version the moment it arrives, in the same ``..data`` layout the kubelet would use;
the receiver cannot tell the two writers apart. It is also the kubelet's stand-in in tests.

Writes are skipped when the bytes are unchanged, so a re-list never triggers a reload. When the Secret
is deleted the directory keeps the last content: an endpoint that suddenly trusts nobody is an outage,
and deleting the trust store is not how trust is revoked (the operator rewrites it instead).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import threading
from collections.abc import Iterable

from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secretwatch
from webhookcerts.receiver import trustdir

_log = logging.getLogger("webhookcerts.trust_sync")


@dataclasses.dataclass(frozen=True)
class Config:
    namespace: str
    name: str
    directory: pathlib.Path
    keys: tuple[str, ...] = ()  # empty: every key of the Secret
    mode: int = 0o644


def select(data: dict[str, bytes], keys: Iterable[str]) -> dict[str, bytes]:
    wanted = tuple(keys)
    return dict(data) if not wanted else {k: v for k, v in data.items() if k in wanted}


def sync(
    clients: kube_client.Clients,
    config: Config,
    *,
    stop: threading.Event | None = None,
    once: bool = False,
) -> int:
    """Write every new version of the Secret until ``stop`` (or after the first, with ``once``).

    Returns the number of writes.
    """
    stop = stop or threading.Event()
    writes = 0
    for version in secretwatch.watch_secret(clients, config.namespace, config.name, stop=stop):
        if version.data is None:
            _log.warning(
                json.dumps(
                    {
                        "event": "secret_absent",
                        "secret": f"{config.namespace}/{config.name}",
                        "resource_version": version.resource_version,
                        "action": "keeping the files as they are",
                    }
                )
            )
            continue
        files = select(version.data, config.keys)
        missing = sorted(set(config.keys) - set(files))
        if missing:
            _log.warning(json.dumps({"event": "keys_missing", "keys": missing}))
        if not files:
            continue
        written = trustdir.write_atomic(config.directory, files, mode=config.mode)
        if written:
            writes += 1
        _log.info(
            json.dumps(
                {
                    "event": "synced" if written else "unchanged",
                    "secret": f"{config.namespace}/{config.name}",
                    "resource_version": version.resource_version,
                    "files": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
                }
            )
        )
        if once:
            stop.set()
            break
    return writes
