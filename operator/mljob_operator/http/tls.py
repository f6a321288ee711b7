"""The data API's TLS: a mounted certificate, or a self-signed one made at start.

Bearer tokens travel on every request, so the API is HTTPS unless told otherwise. A
generated pair lives under `<data dir>/tls/` (on the operator's volume) and is reused while
it has more than `RENEW_BEFORE` left, so clients that pinned it keep working across
restarts; its certificate is also what a test or a CLI user passes as the CA to trust.

A mounted pair is replaced in place when its Secret changes (cert-manager renewing it), so
`ReloadingContext` checks the files when a client says hello and serves the new pair from
that handshake on, without a restart; a pair that does not load (a key not matching its
certificate, half written) is refused and the previous one kept.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"
CHECK_EVERY_S = 1.0

log = logging.getLogger(__name__)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def self_signed(names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A P-256 key and a self-signed server certificate for `names` (DNS names or IPs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mljob-operator")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _still_good(cert_path: Path, names: tuple[str, ...]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    wanted = {_san(n) for n in names}
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
    return fresh and wanted <= set(sans)


def generated_pair(directory: Path, extra_names: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """The self-signed pair in `directory`, made (again) when missing, expiring or lacking
    a wanted name."""
    names = tuple(dict.fromkeys((*DEFAULT_NAMES, socket.gethostname(), *extra_names)))
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if key_path.exists() and _still_good(cert_path, names):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(names)
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


Fingerprint = tuple[tuple[int, int, int], ...]


def _fingerprint(*paths: Path) -> Fingerprint:
    """Inode, size and mtime of each file, following symlinks (a Secret volume swaps its
    `..data` link, so a renewed pair has new inodes)."""
    stats = [os.stat(p) for p in paths]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


class ReloadingContext:
    """A server SSL context that serves the newest loadable pair of `cert` and `key`.

    The listener's context has an SNI callback, which OpenSSL calls on every ClientHello
    (with or without a server name): at most every `check_every_s` it compares the files'
    fingerprint with the loaded one and, when they changed, builds a new context; every
    handshake is switched to the newest context. No task, no timer: a pair is reloaded by
    the first connection after it changed."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        check_every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert, self.key = cert, key
        self.check_every_s, self.clock = check_every_s, clock
        self._seen = _fingerprint(cert, key)
        self.listener = server_context(cert, key)
        self.listener.sni_callback = self._hello
        self.current = self.listener
        self._checked_at = clock()
        self.reloads = 0

    def check(self) -> bool:
        """Load the pair again if its files changed; True when a new pair is served."""
        self._checked_at = self.clock()
        try:
            seen = _fingerprint(self.cert, self.key)
        except OSError as err:
            log.warning(
                "TLS pair %s, %s unreadable, serving the previous one: %s", *self._paths(), err
            )
            return False
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            fresh = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as err:
            log.warning(
                "TLS pair %s, %s refused, serving the previous one: %s", *self._paths(), err
            )
            return False
        self.current = fresh
        self.reloads += 1
        log.info("TLS pair %s, %s reloaded", *self._paths())
        return True

    def check_if_due(self) -> None:
        """`check` unless it ran less than `check_every_s` ago (for a user of the pair
        other than the listener, such as the peer trust of forwarding)."""
        if self.clock() - self._checked_at >= self.check_every_s:
            self.check()

    def _paths(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)

    def _hello(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        try:
            if self.clock() - self._checked_at >= self.check_every_s:
                self.check()
            if conn.context is not self.current:
                conn.context = self.current
        except Exception:  # an escaping error would fail the handshake with no trace
            log.exception("TLS pair check failed; serving the previous pair")
