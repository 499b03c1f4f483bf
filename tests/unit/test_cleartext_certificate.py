"""The receiver names a refused client certificate only from what the client sent in the clear (TLS 1.2).

Real handshakes between two OpenSSL endpoints in memory: the bytes the client sends are what the
receiver's memory BIO gets, fed to the witness byte by byte or all at once.
"""

from __future__ import annotations

import pathlib
import ssl

import pytest
from cryptography.hazmat.primitives import serialization

from tests.unit import mtls_pki
from webhookcerts.receiver import cleartext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> mtls_pki.Pki:
    return mtls_pki.make(tmp_path_factory.mktemp("pki"))


def _server(pki: mtls_pki.Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server.cert_path, pki.server.key_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=pki.alpha.cert_pem.decode())
    return ctx


def _client(pki: mtls_pki.Pki, pair: mtls_pki.Pair | None, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.server_ca.cert_path)
    ctx.maximum_version = version
    if pair is not None:
        ctx.load_cert_chain(pair.cert_path, pair.key_path)
    return ctx


def _handshake(
    pki: mtls_pki.Pki, pair: mtls_pki.Pair | None, version: ssl.TLSVersion, *, chunk: int | None = None
) -> tuple[cleartext.CertificateWitness, bool]:
    """Drive both ends to the end of the handshake; what the witness saw, and whether the server accepted."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = _client(pki, pair, version).wrap_bio(c_in, c_out, server_hostname="localhost")
    server = _server(pki).wrap_bio(s_in, s_out, server_side=True)
    witness = cleartext.CertificateWitness()
    accepted = None
    for _ in range(20):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass
        sent = c_out.read()
        if sent:
            step = chunk or len(sent)
            for i in range(0, len(sent), step):
                witness.feed(sent[i : i + step])
            s_in.write(sent)
        try:
            server.do_handshake()
            accepted = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            accepted = False
        answer = s_out.read()
        if answer:
            c_in.write(answer)
        if accepted is not None and not answer:
            break
    assert accepted is not None, "the handshake never ended"
    return witness, accepted


def _der(pair: mtls_pki.Pair) -> bytes:
    return pair.cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_a_tls12_client_certificate_is_read_whether_accepted_or_refused(pki: mtls_pki.Pki, chunk: int | None) -> None:
    witness, accepted = _handshake(pki, pki.alpha, ssl.TLSVersion.TLSv1_2, chunk=chunk)
    assert accepted and witness.certificate == _der(pki.alpha)
    witness, accepted = _handshake(pki, pki.stranger, ssl.TLSVersion.TLSv1_2, chunk=chunk)
    assert not accepted, "the stranger must be refused by OpenSSL"
    assert witness.certificate == _der(pki.stranger)
    assert witness.done


def test_tls13_hides_the_certificate_and_nothing_is_read(pki: mtls_pki.Pki) -> None:
    witness, accepted = _handshake(pki, pki.stranger, ssl.TLSVersion.TLSv1_3)
    assert not accepted
    assert witness.certificate is None
    assert witness.done, "the witness stops at the first record that is not plaintext handshake"


def test_a_client_without_a_certificate_gives_none(pki: mtls_pki.Pki) -> None:
    witness, accepted = _handshake(pki, None, ssl.TLSVersion.TLSv1_2)
    assert not accepted
    assert witness.certificate is None


def test_the_witness_holds_no_more_than_its_limit(tmp_path: pathlib.Path) -> None:
    witness = cleartext.CertificateWitness()
    # A handshake record that announces more than the limit and never ends.
    witness.feed(bytes([22, 3, 3, 0xFF, 0xFF]))
    for _ in range(cleartext.LIMIT // 4096 + 1):
        witness.feed(b"\x00" * 4096)
    assert witness.done and witness.certificate is None
    assert len(witness._records) == 0  # the memory bound is the point
