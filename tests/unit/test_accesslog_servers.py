"""The access-log parsers on lines the real nginx and HAProxy write with the formats docs/receivers/ gives.

Each server verifies clients against a trust file holding ``alpha``; curl presents ``alpha`` (accepted),
``stranger`` (refused), an expired listed-nowhere one (refused) and no certificate (not a presentation).
The parser must name each by the SHA-1 the server logged and give the server's own verdict, and skip
the request without a certificate. HAProxy (``verify required``) aborts a refused handshake: its refusals
come only through ``error-log-format``, which is what this proves the documented configuration catches.
"""

from __future__ import annotations

import pathlib

import pytest

from tests import conftest, logging_servers
from tests import servers as launchers
from webhookcerts.receiver import accesslog

pytestmark = pytest.mark.skipif(
    not all(map(launchers.shutil.which, ("nginx", "haproxy", "curl"))), reason="nginx, haproxy or curl missing"
)


def _presentations(log: pathlib.Path, format: str) -> list[accesslog.Presentation | None]:
    """Every line of the log that carries the fields, parsed (a server's own notices are not)."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [accesslog.PARSERS[format](line) for line in lines if "webhookcerts fp=" in line]


@pytest.mark.parametrize("server", ["nginx", "haproxy"])
def test_a_real_server_s_lines_name_each_certificate_and_its_verdict(
    server: str, workspace: launchers.Workspace, tmp_path: pathlib.Path
) -> None:
    pki = workspace.material.pki
    trust = tmp_path / "ca.crt"
    trust.write_bytes(pki.alpha.cert_pem)
    start = logging_servers.start_nginx if server == "nginx" else logging_servers.start_haproxy
    launched = start(workspace, trust)

    # What each server answers is the premise: nginx refuses with 400 after the handshake, HAProxy aborts it.
    refused_status = 400 if server == "nginx" else 0
    assert logging_servers.present(launched, pki.alpha) == 200
    assert logging_servers.present(launched, pki.stranger) == refused_status
    assert logging_servers.present(launched, pki.expired) == refused_status
    assert logging_servers.present(launched, None) == refused_status

    expected = [
        accesslog.Presentation(True, sha1=logging_servers.sha1(pki.alpha)),
        accesslog.Presentation(False, sha1=logging_servers.sha1(pki.stranger)),
        accesslog.Presentation(False, sha1=logging_servers.sha1(pki.expired)),
    ]

    def parsed() -> list[accesslog.Presentation | None]:
        return _presentations(launched.log, server)

    # A server writes its line after the answer: wait for the last request's (no certificate: logged,
    # but not a presentation). HAProxy also logs the readiness probe's bare connection, without one.
    assert conftest.poll(lambda: len([p for p in parsed() if p]) == len(expected) and parsed()[-1] is None, 30)
    assert [p for p in parsed() if p is not None] == expected


def test_the_receiver_guides_give_the_formats_tested_here() -> None:
    nginx = (logging_servers.RECEIVERS / "nginx.md").read_text()
    haproxy = (logging_servers.RECEIVERS / "haproxy.md").read_text()
    assert logging_servers.NGINX_LOG_FORMAT in nginx
    assert logging_servers.HAPROXY_LOG_FORMAT in haproxy
    assert logging_servers.HAPROXY_ERROR_LOG_FORMAT in haproxy
