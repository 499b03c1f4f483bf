"""``Launched.reloaded()`` (tests/servers.py) against each real server, without a cluster.

test_servers.py waits for ``reloaded()`` after an emergency before it asserts that a keep-alive connection
opened with the revoked certificate carries nothing further. That wait is only worth something if it
cannot hold early, so here each server is caught in the middle of a reload and held there: the process
that must do the work is stopped with SIGSTOP (nginx's and HAProxy's old worker, which holds the kept
connection; the whole Java or Go server, which swaps its trust in place) while the trust store changes and,
for nginx and HAProxy, the reload command runs. ``reloaded()`` must say no while it is held (the positive
control: the wait would have seen the reload under way), and yes once it is let go and has finished;
from then on the kept connection is answered the way the server's ``kept`` says, at once.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import subprocess

import pytest

from tests import processes
from tests import servers as launchers
from tests.e2e import test_reload as reload
from tests.e2e import test_servers as servers
from tests.unit import mtls_pki
from webhookcerts.domain import names, truststores

pytestmark = pytest.mark.e2e

KINDS = ["nginx", "haproxy", "java-pkcs12", "java-jks", "go"]


def swap_trust(directory: pathlib.Path, *pairs: mtls_pki.Pair) -> None:
    """ca.crt and both truststores listing ``pairs``, each file replaced whole (as trust-sync swaps them:
    a watcher never reads half a file)."""
    directory.mkdir(exist_ok=True)
    pem = b"".join(pair.cert_pem for pair in pairs)
    files = {
        names.TRUST_KEY: pem,
        "truststore.p12": truststores.encode(pem, "pkcs12", launchers.TRUSTSTORE_PASSWORD),
        "truststore.jks": truststores.encode(pem, "jks", launchers.TRUSTSTORE_PASSWORD),
    }
    for name, data in files.items():
        staged = directory / f".{name}.new"
        staged.write_bytes(data)
        staged.replace(directory / name)


def start(
    name: str, request: pytest.FixtureRequest, ws: launchers.Workspace, trust_dir: pathlib.Path
) -> tuple[launchers.Launched, int]:
    """Starts the server; returns it and the process to hold: its worker (nginx, HAProxy) or the server."""
    ca = trust_dir / names.TRUST_KEY
    if name in ("nginx", "haproxy"):
        started = {"nginx": launchers.start_nginx, "haproxy": launchers.start_haproxy}[name](ws, ca)
        (worker,) = started.launch_workers
        return started, worker
    if name == "go":
        started = launchers.start_go(ws, request.getfixturevalue("go_server"), ca)
    else:
        store = trust_dir / ("truststore.jks" if name == "java-jks" else "truststore.p12")
        classes = request.getfixturevalue("java_classes")
        started = launchers.start_java(ws, classes, store, "JKS" if name == "java-jks" else "PKCS12", name)
    return started, ws.procs[-1].pid


@pytest.mark.parametrize("name", KINDS)
def test_reloaded_holds_only_once_the_server_has_taken_the_new_trust(
    name: str, request: pytest.FixtureRequest, workspace: launchers.Workspace
) -> None:
    pki = workspace.material.pki
    alpha = reload.Client("alpha", pki.alpha.cert_path, pki.alpha.key_path, pki.alpha.fingerprint)
    beta = reload.Client("beta", pki.beta.cert_path, pki.beta.key_path, pki.beta.fingerprint)
    trust_dir = workspace.directory / "trust"
    swap_trust(trust_dir, pki.alpha, pki.beta)
    started, held = start(name, request, workspace, trust_dir)
    ep = servers.ServerEndpoint.of(started)
    assert ep.accepts(alpha) and ep.accepts(beta)
    kept = ep.connect(alpha)
    try:
        assert servers.post_on(kept, "before") == "200"

        os.kill(held, signal.SIGSTOP)
        try:
            swap_trust(trust_dir, pki.beta)
            if started.reload_command is not None:
                assert started.master_pid is not None
                subprocess.run(shlex.split(started.reload_command), check=True, timeout=60)
                # The master has started the new worker; the old one, held, cannot finish.
                processes.wait_for(
                    lambda: len(launchers.workers_of(started.master_pid or 0)) == 2, what=f"{name}'s new worker"
                )
            assert not started.reloaded(), f"{name}: reloaded() while the reload is held up"
        finally:
            os.kill(held, signal.SIGCONT)

        processes.wait_for(started.reloaded, what=f"{name}'s reload to finish")
        # No wait here: once reloaded() holds, the connection from before is done with.
        assert servers.post_on(kept, "after") == started.kept, name
    finally:
        kept.close()
    assert ep.refuses(alpha), name
    assert ep.accepts(beta), name
