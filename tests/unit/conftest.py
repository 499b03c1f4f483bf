"""What the receiver and provider-simulator tests share: throw-away certificates and a receiver to test;
and logging as each test found it.

``trust_dir`` is what a receiver trusts at first: the ``alpha`` client certificate, unless a module
defines the fixture again with its own choice.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Iterator

import pytest

from tests.unit import mtls_pki
from webhookcerts.receiver import server, trustdir


@pytest.fixture(autouse=True)
def _logging_enabled() -> Iterator[None]:
    """Shell completion run in-process silences logging for the whole process (``logging.disable``, so
    that no library writes into a command line): a later test checking a log line would see nothing."""
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> mtls_pki.Pki:
    return mtls_pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trust_dir(tmp_path: pathlib.Path, pki: mtls_pki.Pki) -> pathlib.Path:
    directory = tmp_path / "trust"
    trustdir.write_atomic(directory, {"ca.crt": pki.alpha.cert_pem})
    return directory


def start(pki: mtls_pki.Pki, trust_dir: pathlib.Path, **kwargs: object) -> server.Receiver:
    """A running receiver on a free loopback port with ``pki``'s serving certificate; ``kwargs`` go into
    its Config, except ``on_delivery`` (the application behind it)."""
    on_delivery = kwargs.pop("on_delivery", None)
    config = server.Config(
        cert=pki.server.cert_path,
        key=pki.server.key_path,
        trust_dir=trust_dir,
        host="127.0.0.1",
        port=0,
        **kwargs,  # type: ignore[arg-type]
    )
    return server.Receiver(config, on_delivery=on_delivery).start()  # type: ignore[arg-type]


@pytest.fixture
def receiver(pki: mtls_pki.Pki, trust_dir: pathlib.Path) -> Iterator[server.Receiver]:
    rx = start(pki, trust_dir)
    yield rx
    rx.close()
