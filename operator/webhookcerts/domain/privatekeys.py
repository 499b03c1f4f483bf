"""Whether some bytes are, or carry, a private key: what a trust store must never hold.

trust-sync copies keys of a Secret into a pod's directory, world-readable by design (a trust store is
public). A layout the design allows keeps the endpoint's own ``tls.key`` beside ``ca.crt`` in the trust
Secret, and a user may name any key; so before a file is written its content is looked at, not only
its name. Recognised: PEM private keys of every kind (PKCS#8, encrypted or not, PKCS#1, SEC1, OpenSSH,
OpenPGP), DER private keys (encrypted PKCS#8 included), a PKCS#12 that opens with one of the passwords
given and holds a key, and a JKS keystore with a private-key entry (the JDK's key-protection OID, which
every such entry carries, found without the store's password). A PKCS#12 that opens with none of the
passwords cannot be looked into; it is let through (a truststore whose password trust-sync was not
told), which is why only keys the user names are copied at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography import exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

_PEM_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_JKS_MAGIC = b"\xfe\xed\xfe\xed"
# DER of 1.3.6.1.4.1.42.2.17.1.1, sun.security.provider.KeyProtector's algorithm: every JKS key entry.
_JKS_KEY_PROTECTOR = bytes.fromhex("060a2b060104012a02110101")


def private_key_kind(data: bytes, passwords: Iterable[str] = ("",)) -> str | None:
    """What private key ``data`` is or holds (for a message: never the key itself), None if none."""
    if _PEM_KEY.search(data):
        return "a PEM private key"
    if data.startswith(_JKS_MAGIC):
        return "a JKS keystore with a private key" if _JKS_KEY_PROTECTOR in data else None
    try:
        serialization.load_der_private_key(data, None)
    except TypeError:  # a password is needed: it is one, encrypted
        return "an encrypted DER private key"
    except (ValueError, exceptions.UnsupportedAlgorithm):
        pass
    else:
        return "a DER private key"
    for password in dict.fromkeys(passwords):
        try:
            store = pkcs12.load_pkcs12(data, password.encode() or None)
        except (ValueError, TypeError):
            continue
        return "a PKCS#12 holding a private key" if store.key is not None else None
    return None
