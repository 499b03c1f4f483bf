"""The provider's "integration and validation" step, done by the operator against the real endpoint.

After a next certificate is issued, connect to ``spec.validation.url`` presenting it: the endpoint must
accept it before anyone cuts over. After an emergency, connect presenting the compromised certificate:
the endpoint must refuse it. The probe speaks plain HTTP/1.1 over TLS >= 1.2 and waits for a response,
because with TLS 1.3 a server's refusal of a client certificate arrives only after the client thinks
the handshake is done.

Python's ssl module loads a key only from a file: the key goes to a private temporary directory for
the duration of one handshake and is removed at once; it never reaches a log or an exception message.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import socket
import ssl
import tempfile
import urllib.parse


class Outcome(enum.Enum):
    ACCEPTED = "Accepted"
    REFUSED = "Refused"
    UNREACHABLE = "Unreachable"


@dataclasses.dataclass(frozen=True)
class Probe:
    outcome: Outcome
    detail: str


def probe(url: str, cert_pem: bytes, key_pem: bytes, *, ca_pem: bytes | None, timeout: float) -> Probe:
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or 443
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    context = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="webhookcerts-probe-") as tmp:
        cert_file, key_file = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        for path_, data in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(path_, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_file, key_file)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Probe(Outcome.UNREACHABLE, f"cannot connect to {host}:{port}: {exc.strerror or exc}")
    try:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            tls.sendall(request.encode())
            status_line = tls.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
    except ssl.SSLCertVerificationError as exc:
        return Probe(Outcome.UNREACHABLE, f"the endpoint's own certificate is not trusted: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Probe(Outcome.REFUSED, f"TLS alert from the endpoint: {exc.reason or exc}")
    except (ConnectionResetError, BrokenPipeError) as exc:
        return Probe(Outcome.REFUSED, f"the endpoint closed the connection during the handshake: {exc}")
    except OSError as exc:
        return Probe(Outcome.UNREACHABLE, f"{host}:{port}: {exc}")
    finally:
        raw.close()
    if not status_line.startswith("HTTP/"):
        return Probe(Outcome.REFUSED, "the endpoint closed the connection without answering")
    return Probe(Outcome.ACCEPTED, f"the endpoint answered {status_line!r}")
