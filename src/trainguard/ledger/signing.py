"""Ed25519 keys and signed tree heads.

A signed tree head (STH) commits to the whole log: its size, its Merkle root,
when it was signed and by which key. The signed message is the body of a
C2SP ``tlog-checkpoint`` (origin line, size, base64 root) with the timestamp
as an extension line, so it reads the same in any language::

    trainguard.ledger/5f0c...
    1048576
    3q2+7w...=
    timestamp 1715000000000

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public). The private
key never needs to be on the cluster: ``trainguard ledger sign`` can run
anywhere that can read the log, and verification needs only public keys.

Example:
    >>> from trainguard.ledger.signing import SigningKey
    >>> key = SigningKey.generate()
    >>> head = key.sign_head("example-log", 1, bytes(32), timestamp=0)
    >>> head.verify([key.public_key])
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainguard.errors import ConfigError, LedgerIntegrityError, StorageError

__all__ = ["PublicKey", "SignedTreeHead", "SigningKey"]


def _backend() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ConfigError(
            "signing needs the 'cryptography' package",
            hint="pip install 'trainguard[signing]'",
        ) from exc
    return ed25519, serialization


class PublicKey:
    """An Ed25519 public key that verifies tree heads."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ConfigError("an Ed25519 public key is 32 bytes", found=f"{len(raw)} bytes")
        self.raw = raw

    @property
    def key_id(self) -> str:
        """The first 16 hex digits of SHA-256 of the raw key."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    @classmethod
    def from_pem(cls, pem: bytes, *, subject: str = "public key") -> PublicKey:
        ed25519, serialization = _backend()
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ConfigError("not a PEM public key", subject=subject) from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError("not an Ed25519 public key", subject=subject)
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def from_file(cls, path: str | Path) -> PublicKey:
        try:
            return cls.from_pem(Path(path).read_bytes(), subject=str(path))
        except OSError as exc:
            raise StorageError(f"cannot read public key: {exc}", subject=str(path)) from exc

    def to_pem(self) -> bytes:
        ed25519, serialization = _backend()
        key = ed25519.Ed25519PublicKey.from_public_bytes(self.raw)
        pem: bytes = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def verify(self, signature: bytes, message: bytes) -> bool:
        ed25519, _ = _backend()
        from cryptography.exceptions import InvalidSignature

        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self.key_id!r})"


class SigningKey:
    """An Ed25519 private key that signs tree heads."""

    def __init__(self, private: Any) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> SigningKey:
        ed25519, _ = _backend()
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKey:
        ed25519, serialization = _backend()
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read signing key: {exc}", subject=str(path)) from exc
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError("not an unencrypted PEM private key", subject=str(path)) from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError("not an Ed25519 private key", subject=str(path))
        return cls(key)

    def save(self, path: str | Path) -> None:
        """Write the key as PKCS#8 PEM, readable by its owner only; never overwrites."""
        _, serialization = _backend()
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise ConfigError("refusing to overwrite an existing key", subject=str(path)) from exc
        except OSError as exc:
            raise StorageError(f"cannot write signing key: {exc}", subject=str(path)) from exc
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    @property
    def public_key(self) -> PublicKey:
        _, serialization = _backend()
        return PublicKey(
            self._private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign_head(
        self, origin: str, size: int, root: bytes, *, timestamp: int | None = None
    ) -> SignedTreeHead:
        """Sign ``(origin, size, root)`` now (or at ``timestamp``, Unix milliseconds)."""
        ts = int(time.time() * 1000) if timestamp is None else timestamp
        unsigned = SignedTreeHead(origin, size, root, ts, self.public_key.key_id, b"\x00" * 64)
        signature = self._private.sign(unsigned.message())
        return SignedTreeHead(origin, size, root, ts, unsigned.key_id, signature)


@dataclass(frozen=True)
class SignedTreeHead:
    """A commitment to the first ``size`` entries of the log named ``origin``."""

    origin: str
    size: int
    root: bytes
    timestamp: int
    key_id: str
    signature: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise ConfigError("a tree head origin is one non-empty line", found=repr(self.origin))
        if self.size < 0 or self.timestamp < 0:
            raise ConfigError("a tree head has a negative size or timestamp")
        if len(self.root) != 32 or len(self.signature) != 64:
            raise ConfigError("a tree head needs a 32-byte root and a 64-byte signature")

    def message(self) -> bytes:
        """The signed bytes: a C2SP checkpoint body with a timestamp extension line."""
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.size}\n{root}\ntimestamp {self.timestamp}\n".encode()

    def verify(self, trusted: Iterable[PublicKey]) -> None:
        """Check the signature with the trusted key whose id matches.

        Raises:
            LedgerIntegrityError: no trusted key has this id, or the signature is invalid.
        """
        keys = {k.key_id: k for k in trusted}
        subject = f"tree head size {self.size} ({self.origin})"
        key = keys.get(self.key_id)
        if key is None:
            raise LedgerIntegrityError(
                "tree head is signed by a key that is not trusted",
                subject=subject,
                expected="one of key ids " + (", ".join(sorted(keys)) or "(none given)"),
                found=self.key_id,
                hint="pass the log's public key with --public-key; a swapped key means a forged log",
            )
        if not key.verify(self.signature, self.message()):
            raise LedgerIntegrityError(
                "tree head signature is invalid",
                subject=subject,
                expected=f"a valid Ed25519 signature by key {self.key_id}",
                found="a signature that does not verify",
                hint="the tree head or its signature was altered",
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignedTreeHead:
        """Rebuild a tree head, validating every field.

        Raises:
            LedgerIntegrityError: a field is missing or malformed.
        """
        try:
            origin, size, ts, key_id = (
                data["origin"],
                data["size"],
                data["timestamp"],
                data["key_id"],
            )
            if not (
                isinstance(origin, str)
                and isinstance(key_id, str)
                and type(size) is int
                and type(ts) is int
            ):
                raise TypeError("wrong field types")
            root = bytes.fromhex(data["root"])
            signature = base64.b64decode(data["signature"], validate=True)
            return cls(origin, size, root, ts, key_id, signature)
        except (KeyError, TypeError, ValueError, binascii.Error, ConfigError) as exc:
            raise LedgerIntegrityError(f"malformed signed tree head: {exc}") from exc
