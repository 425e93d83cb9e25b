"""Throwaway TLS for the embedded exchange: a CA of its own and a certificate for 127.0.0.1.

Clients trust the CA by its PEM file (``REQUESTS_CA_BUNDLE`` for the SDK, an SSL context or
``SSL_CERT_FILE`` for aiohttp/ccxt). The keys live only in memory and in a temporary directory
the owner removes with `ServerTls.close`; the server certificate names ``127.0.0.1``, ``::1``
and ``localhost`` and lasts a day.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ServerTls"]

_LIFETIME = dt.timedelta(days=1)


@final
class ServerTls:
    """A fresh CA and server certificate, written to a temporary directory.

    Call `close` (or use as a context manager) to remove the directory.
    """

    def __init__(self) -> None:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate client skew
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tradeguard exchange CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self._dir = Path(tempfile.mkdtemp(prefix="tradeguard-exchange-tls-"))
        self.ca_file = self._dir / "ca.pem"
        self.cert_file = self._dir / "server.pem"
        self.key_file = self._dir / "server.key"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.key_file.chmod(0o600)

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that trusts only this CA (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def close(self) -> None:
        """Remove the temporary directory (the CA file included). Idempotent."""
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ServerTls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
