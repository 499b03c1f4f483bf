"""Bundle files kept while their key Secret cannot be read: whether they still open, and hold their key.

``pki.encrypted_key_matches`` is how the operator tells kept files that need an earlier password
(None) from files whose key is not their certificate's (False, never offered again).
"""

from __future__ import annotations

import datetime

import pytest

from webhookcerts.domain import models, pki

NOW = datetime.datetime(2026, 3, 1, 9, 30, 15, tzinfo=datetime.UTC)
SUBJECT = models.Subject(common_name="acme-webhooks")
PASSWORD = b"correct horse battery staple"


@pytest.fixture(scope="module")
def pairs() -> tuple[pki.KeyPair, pki.KeyPair]:
    year = datetime.timedelta(hours=8760)
    return pki.new_key_pair(SUBJECT, NOW, year), pki.new_key_pair(SUBJECT, NOW, year)


def test_kept_files_open_with_their_password_and_hold_their_key(pairs: tuple[pki.KeyPair, pki.KeyPair]) -> None:
    pair, other = pairs
    # Two rounds instead of 600,000: what is checked is the answer, not the cost.
    encrypted = pki.encrypted_key_pem(pair.key_pem, PASSWORD, rounds=2)
    assert pki.encrypted_key_matches(encrypted, pair.cert_pem, PASSWORD) is True
    assert pki.encrypted_key_matches(encrypted, pair.cert_pem, b"an earlier password") is None
    assert pki.encrypted_key_matches(encrypted, other.cert_pem, PASSWORD) is False
    assert pki.encrypted_key_matches(b"not a key", pair.cert_pem, PASSWORD) is None
    assert pki.encrypted_key_matches(encrypted, b"not a certificate", PASSWORD) is None
