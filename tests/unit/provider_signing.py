"""Helpers for the provider-signature tests: deliveries to tamper with, the Go vectors, verifiers."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from webhookcerts.receiver import keyset, provider_scheme, signatures

VECTORS_DIR = pathlib.Path(__file__).resolve().parent / "provider_vectors"
AUTHORITY = "receiver.example:8443"


@dataclasses.dataclass(frozen=True)
class Delivery:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def without(self, name: str) -> Delivery:
        kept = tuple((n, v) for n, v in self.headers if n.lower() != name.lower())
        assert len(kept) < len(self.headers), f"positive control: {name} was there to remove"
        return dataclasses.replace(self, headers=kept)

    def replacing(self, name: str, value: str) -> Delivery:
        assert any(n.lower() == name.lower() for n, _ in self.headers), f"positive control: {name} is there"
        return dataclasses.replace(
            self, headers=tuple((n, value if n.lower() == name.lower() else v) for n, v in self.headers)
        )

    def header(self, name: str) -> str:
        return next(v for n, v in self.headers if n.lower() == name.lower())


def from_vector(vector: dict[str, Any]) -> Delivery:
    return Delivery(
        vector["method"],
        f"https://{AUTHORITY}{vector['target']}",
        tuple((n, v) for n, v in vector["headers"]),
        vector["body"].encode(),
    )


def go_vectors() -> list[dict[str, Any]]:
    """Deliveries signed by tests/unit/provider_vectors (Go, standard library only)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not installed: the independent signature vectors are made with `go run`")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOPROXY": "off"}
    done = subprocess.run(
        [go, "run", "."], cwd=VECTORS_DIR, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    vectors: list[dict[str, Any]] = json.loads(done.stdout)
    return vectors


def write_public(directory: pathlib.Path, key_id: str, key: signatures.PrivateKey | str) -> pathlib.Path:
    path = directory / f"{key_id}.pem"
    if isinstance(key, str):
        path.write_text(key)
    else:
        path.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return path


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(variant: provider_scheme.Variant, keys: pathlib.Path, clock: Clock) -> provider_scheme.ProviderVerifier:
    return provider_scheme.ProviderVerifier(variant, keyset.KeySet((str(keys),)), clock=clock)


def verify(v: provider_scheme.ProviderVerifier, d: Delivery) -> signatures.Verified:
    return v.verify(d.method, d.url, d.headers, d.body)
