"""The reference receiver as a reporter: what it counts per certificate, and the trust hash it reports."""

from __future__ import annotations

import hashlib
import http.client
import pathlib
import ssl
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from tests import conftest
from tests.unit import mtls_pki
from tests.unit.test_receiver import client_context, post, trust_bundle
from webhookcerts.cli import main as cli_main
from webhookcerts.domain import trust
from webhookcerts.receiver import reporting, server, trustdir


def sha1(pair: mtls_pki.Pair) -> str:
    return hashlib.sha1(pair.cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest()


@pytest.fixture
def tally() -> reporting.Tally:
    return reporting.Tally()


@pytest.fixture
def receiver(pki: mtls_pki.Pki, trust_dir: pathlib.Path, tally: reporting.Tally) -> Iterator[server.Receiver]:
    config = server.Config(
        cert=pki.server.cert_path, key=pki.server.key_path, trust_dir=trust_dir, host="127.0.0.1", port=0
    )
    rx = server.Receiver(config, tally=tally).start()
    yield rx
    rx.close()


def test_every_request_counts_as_a_presentation_of_its_certificate(
    receiver: server.Receiver, tally: reporting.Tally, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    for _ in range(3):  # one connection, three deliveries: three presentations
        assert post(conn).status == 200

    [entry] = tally.snapshot()
    assert (entry.sha256, entry.sha1) == (pki.alpha.fingerprint, sha1(pki.alpha))
    assert (entry.accepted, entry.refused) == (3, 0)
    assert entry.last_accepted == entry.last_seen

    # Trust moves to beta: the old connection's next request is refused, and counted so.
    trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})
    assert conftest.poll(lambda: receiver.trust.current.generation == 2)
    assert post(conn).status == 421
    conn.close()
    [entry] = tally.snapshot()
    assert (entry.accepted, entry.refused) == (3, 1)
    assert entry.last_refused is not None


def test_a_handshake_the_tls_library_refused_counts_nothing(
    receiver: server.Receiver, tally: reporting.Tally, pki: mtls_pki.Pki
) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.stranger))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        post(conn)
    conn.close()
    # The refusal happened (the positive control), and Python's ssl gave no certificate to count.
    assert conftest.poll(lambda: receiver.stats.snapshot()["handshake_failures"])
    assert tally.snapshot() == []


def test_the_trust_hash_is_the_annotation_value_of_the_ca_crt_served(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    served = (trust_dir / "ca.crt").read_bytes()
    assert receiver.served_trust_hash() == trust.trust_hash(served)

    # The hash of the file's bytes as written (here with a blank line the certificates do not have).
    both = trust_bundle(pki.alpha, pki.beta) + b"\n"
    trustdir.write_atomic(trust_dir, {"ca.crt": both})
    assert conftest.poll(lambda: receiver.trust.current.generation == 2)
    assert receiver.served_trust_hash() == trust.trust_hash(both)

    # A file that cannot be used is not served: the hash stays the one of what is.
    trustdir.write_atomic(trust_dir, {"ca.crt": b"not a certificate"})
    assert conftest.poll(lambda: receiver.trust.last_error is not None)
    assert receiver.served_trust_hash() == trust.trust_hash(both)


def test_no_trust_hash_for_a_file_that_is_not_ca_crt(pki: mtls_pki.Pki, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "trust"
    trustdir.write_atomic(directory, {"bundle.pem": pki.alpha.cert_pem})
    config = server.Config(
        cert=pki.server.cert_path,
        key=pki.server.key_path,
        trust_dir=directory,
        trust_file="bundle.pem",
        host="127.0.0.1",
        port=0,
    )
    with server.Receiver(config) as rx:
        assert rx.trust.current.source_hash  # known to the receiver, but no annotation's value
        assert rx.served_trust_hash() is None


def test_reporting_without_the_pods_identity_stops_at_start_naming_what_is_missing(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in reporting.PodIdentity.ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAME", "rx-0")
    argv = ["receiver", "--cert", str(pki.server.cert_path), "--key", str(pki.server.key_path)]
    argv += ["--trust-dir", str(trust_dir), "--host", "127.0.0.1", "--port", "0", "--report-trust-secret", "trust"]
    assert cli_main.main(argv) == 1
    assert "POD_NAMESPACE, POD_UID not set" in capsys.readouterr().err
