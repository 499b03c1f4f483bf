"""The chart's values for the local cluster, so that installing it there takes one command.

charts/webhookcerts/values-devcluster.yaml says what every local cluster needs (the image never
pulled, the node's network, the API server on the loopback); two values differ from one cluster to
the next and were found by hand before: the tag of the image the node imported, and the API server's
port, which in-cluster configuration reads from KUBERNETES_SERVICE_PORT(_HTTPS). ``devcluster up``
writes both into ``<dir>/values.yaml``, a complete copy that ``helm install -f`` takes as it is.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from webhookcerts.devcluster import base

VALUES = "charts/webhookcerts/values-devcluster.yaml"
FILE_NAME = "values.yaml"


def values(apiserver_url: str, image: str, source: pathlib.Path | None = None) -> dict[str, Any]:
    """values-devcluster.yaml with this cluster's API server port and the image reference the node holds."""
    source = source or base.repo_file(VALUES)
    if source is None:
        raise base.DevClusterError(f"cannot find {VALUES}: run from a webhookcerts checkout")
    loaded: dict[str, Any] = yaml.safe_load(source.read_text())
    port = apiserver_url.rsplit(":", 1)[1]
    for env in loaded["env"]:
        if env["name"].startswith("KUBERNETES_SERVICE_PORT"):
            env["value"] = port
    repository, tag = image.rsplit(":", 1)
    if repository != loaded["image"]["repository"]:
        raise base.DevClusterError(f"the node holds {image}, not an image of {loaded['image']['repository']}")
    loaded["image"]["tag"] = tag
    return loaded


def write(directory: pathlib.Path, apiserver_url: str, image: str) -> pathlib.Path | None:
    """``<directory>/values.yaml``; None, and nothing written, away from a checkout (no chart to install)."""
    source = base.repo_file(VALUES)
    if source is None:
        return None
    path = directory / FILE_NAME
    header = f"# Written by `webhookcerts devcluster up` for the cluster in this directory, from {VALUES}.\n"
    path.write_text(header + yaml.safe_dump(values(apiserver_url, image, source), sort_keys=False))
    return path
