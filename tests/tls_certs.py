"""Certificates for the TLS tests, made by the openssl command line in a test's directory:
a CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by it,
and a second CA that signed neither (the wrong one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    wrong_ca: str


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: str, name: str) -> tuple[str, str]:
    key, cert = os.path.join(directory, f"{name}.key"), os.path.join(directory, f"{name}.crt")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS, "-subj", f"/CN={name}",
             "-keyout", key, "-out", cert, cwd=directory)  # fmt: skip
    return cert, key


def _signed(directory: str, name: str, ca: tuple[str, str], extensions: str) -> tuple[str, str]:
    key, csr, cert = (os.path.join(directory, f"{name}.{ext}") for ext in ("key", "csr", "crt"))
    ext_file = os.path.join(directory, f"{name}.ext")
    with open(ext_file, "w") as handle:
        handle.write(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr, cwd=directory)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", DAYS,
             "-extfile", ext_file, "-out", cert, cwd=directory)  # fmt: skip
    return cert, key


def make_certificates(directory: str) -> Certificates:
    if shutil.which("openssl") is None:
        message = "the openssl command is needed to make the TLS tests' certificates (apt-get install openssl)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    os.makedirs(directory, exist_ok=True)
    ca = _ca(directory, "ca")
    wrong_ca, _ = _ca(directory, "wrong-ca")
    server = _signed(
        directory, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    client = _signed(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    return Certificates(ca[0], server[0], server[1], client[0], client[1], wrong_ca)
