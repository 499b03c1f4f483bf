"""What each server makes of the certificates a rotation puts side by side, without a cluster.

The servers of test_servers.py (nginx, HAProxy, the JDK's HttpsServer on a PKCS#12 and a JKS truststore
and once with the JDK's own trust manager, Go's net/http) each read one trust store written here as
trust-sync would write it: one subject twice (as an earlier release issued a rotation's current and
next, and as the operator issues them now, with an authority key identifier), a listed certificate
that has expired, and a handshake offering TLS 1.1. What each does is in the test's docstring.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import servers as launchers
from tests.e2e import test_reload as reload
from tests.e2e import test_servers as servers
from tests.unit import mtls_pki
from webhookcerts.domain import models, names, pki, truststores

pytestmark = pytest.mark.e2e


@dataclasses.dataclass(frozen=True)
class Listed:
    """Client certificates with the operator's profile, written into one trust store for each server."""

    alpha: reload.Client  # a plain one
    expired: reload.Client  # listed, but past notAfter
    twins: tuple[reload.Client, reload.Client]  # one subject, as an earlier release's current and next
    akid_twins: tuple[reload.Client, reload.Client]  # one (other) subject, as the operator issues them now

    def pem(self) -> bytes:
        clients = (self.alpha, self.expired, *self.twins, *self.akid_twins)
        return b"".join(c.cert_path.read_bytes() for c in clients)


def _client(pair: mtls_pki.Pair) -> reload.Client:
    return reload.Client(pair.name, pair.cert_path, pair.key_path, pair.fingerprint)


def _twin(directory: pathlib.Path, name: str, common_name: str, *, akid: bool) -> reload.Client:
    """A certificate exactly as the operator issues it (RSA 2048 for speed), carrying its own key
    identifier as the authority key identifier; without it (``akid=False``) as an earlier release issued
    them, the case OpenSSL servers could not tell apart."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = pki.issue_certificate(key, pki_subject(common_name), now, datetime.timedelta(hours=1))
    assert cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    if not akid:
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(key.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
        )
        for extension in cert.extensions:
            if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
                builder = builder.add_extension(extension.value, extension.critical)
        cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return reload.write_client(directory, name, key_pem, cert.public_bytes(serialization.Encoding.PEM))


def pki_subject(common_name: str) -> models.Subject:
    return models.Subject(common_name=common_name, organization="Example")


@pytest.fixture(scope="module")
def listed(material: launchers.Material, tmp_path_factory: pytest.TempPathFactory) -> Listed:
    directory = tmp_path_factory.mktemp("listed")
    twins = tuple(_twin(directory, n, "twins.webhooks.example.com", akid=False) for n in ("current", "next"))
    akid = tuple(_twin(directory, f"akid-{n}", "akid.webhooks.example.com", akid=True) for n in ("current", "next"))
    return Listed(_client(material.pki.alpha), _client(material.pki.expired), twins, akid)  # type: ignore[arg-type]


STATIC_KINDS = ["nginx", "haproxy", "java-pkcs12", "java-jks", "java-jdk-trust-manager", "go"]


def write_trust(directory: pathlib.Path, pem: bytes) -> None:
    """ca.crt and both truststores, as trust-sync would write them (a plain directory here)."""
    directory.mkdir(exist_ok=True)
    (directory / names.TRUST_KEY).write_bytes(pem)
    (directory / "truststore.p12").write_bytes(truststores.encode(pem, "pkcs12", launchers.TRUSTSTORE_PASSWORD))
    (directory / "truststore.jks").write_bytes(truststores.encode(pem, "jks", launchers.TRUSTSTORE_PASSWORD))


@pytest.mark.parametrize("name", STATIC_KINDS)
def test_two_certificates_of_one_subject_and_an_expired_one(
    name: str, request: pytest.FixtureRequest, workspace: launchers.Workspace, listed: Listed
) -> None:
    """What each server makes of the certificates a rotation puts side by side, found here:

    - the operator's current and next certificate share their subject name. OpenSSL builds the chain of
      a self-signed client certificate by looking its issuer up by name, takes the first certificate of
      that name in the CA file that could have issued it, and trusts the client only if that one is the
      client's certificate itself: nginx and HAProxy (OpenSSL without X509_V_FLAG_PARTIAL_CHAIN, which
      neither can set) accept exactly one of the two, which one depends on the store's order. An
      authority key identifier (keyid = the subject key identifier) rules the other one out, and both
      are accepted. The JDK and Go look the client certificate itself up: both accepted;
    - a listed certificate that has expired is refused by every server here; the JDK's own trust manager
      accepts it (a trusted entry is taken without a look at its dates), HttpsServer.java checks them;
    - TLS 1.1 is refused by every server.
    """
    trust_dir = workspace.directory / "trust"
    write_trust(trust_dir, listed.pem())
    ca = trust_dir / names.TRUST_KEY
    if name == "nginx":
        started = launchers.start_nginx(workspace, ca)
    elif name == "haproxy":
        started = launchers.start_haproxy(workspace, ca)
    elif name == "go":
        started = launchers.start_go(workspace, request.getfixturevalue("go_server"), ca)
    else:
        jks = name == "java-jks"
        started = launchers.start_java(
            workspace,
            request.getfixturevalue("java_classes"),
            trust_dir / ("truststore.jks" if jks else "truststore.p12"),
            "JKS" if jks else "PKCS12",
            name,
            check_validity=name != "java-jdk-trust-manager",
        )
    ep = servers.ServerEndpoint.of(started)
    assert ep.accepts(listed.alpha)
    assert ep.refuses(servers.stranger_of(workspace.material))

    # One subject twice.
    accepted = [c.name for c in listed.twins if ep.accepts(c)]
    refused = [c.name for c in listed.twins if ep.refuses(c)]
    if name in ("nginx", "haproxy"):
        assert len(accepted) == 1 and len(refused) == 1, (accepted, refused)
        if name == "nginx":
            reasons = {r["verify"] for r in map(json.loads, ep.log.read_text().splitlines()) if r["status"] == 400}
            assert "FAILED:self-signed certificate" in reasons, reasons
    else:
        assert accepted == ["current", "next"], (accepted, refused)
    assert [c.name for c in listed.akid_twins if ep.accepts(c)] == ["akid-current", "akid-next"]

    # Listed, but expired.
    now = datetime.datetime.now(datetime.UTC)
    assert pki.inspect(listed.expired.cert_path.read_bytes()).not_after < now
    if name == "java-jdk-trust-manager":
        assert ep.accepts(listed.expired), "the JDK's trust manager checked the dates of a trusted entry"
    else:
        assert ep.refuses(listed.expired), f"{ep.name} accepted an expired certificate its trust store lists"

    # TLS 1.1, offered for real (SECLEVEL=0 lets this machine's OpenSSL offer it), with a trusted cert:
    # a protocol_version alert, but from the JDK's HttpsServer, which closes the connection without
    # sending the alert its engine made.
    old_tls = ep.s_client(listed.alpha, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert old_tls.returncode != 0, old_tls.stdout
    said = old_tls.stdout + old_tls.stderr
    assert ("unexpected eof while reading" if name.startswith("java") else "alert protocol version") in said, said
