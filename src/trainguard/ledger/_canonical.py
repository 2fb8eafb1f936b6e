"""Canonical encoding of ledger entries and content digests. Pure: no I/O.

An entry is a JSON object encoded with sorted keys, no insignificant
whitespace and UTF-8 without ``\\u`` escapes for printable text. The value
domain is restricted (no floats, integers within ±2**53, ASCII object keys) so
the bytes equal the RFC 8785 (JCS) canonical form: any JCS implementation, in
any language, reproduces them and therefore the Merkle leaf hash.

Content digests are strings ``"<algorithm>:<64 hex>"``. Files up to
:data:`SHARD_SIZE` bytes use plain ``sha256``; larger ones use
``sha256-shards``: the SHA-256 of a header and the SHA-256 of each
:data:`SHARD_SIZE` shard, so shards can be hashed in parallel
(:mod:`trainguard.ledger.capture`) yet the digest depends only on the content.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DIGEST_RE",
    "MAX_INT",
    "SHARD_SIZE",
    "JSONValue",
    "decode",
    "digest_of_shards",
    "encode",
    "normalize_digest",
    "sha256_digest",
]

#: JSON-compatible values an entry may hold.
JSONValue = Any

#: Integers beyond this are not exactly representable in JSON numbers (RFC 8785 §3.2.2.3).
MAX_INT = 2**53 - 1
#: The shard size of ``sha256-shards`` digests. Part of the format: never change it.
SHARD_SIZE = 64 * 1024 * 1024
#: ``algorithm:hex`` with a 256-bit hex value.
DIGEST_RE = re.compile(r"^(sha256|sha256-shards):[0-9a-f]{64}$")
_SHARDS_DOMAIN = b"trainguard.sha256-shards.v1\x00"
#: What ``json.dumps`` with these options builds on every call, built once.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _check(value: JSONValue, path: str) -> None:
    # Exact type checks first: this runs on every append, and almost every
    # value is a str or an int.
    t = type(value)
    if t is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
                raise ValueError(f"{path}: string is not valid Unicode") from exc
        return
    if t is int:
        if not -MAX_INT <= value <= MAX_INT:
            raise ValueError(f"{path}: integer {value} is outside ±2**53")
        return
    if value is None or t is bool:
        return
    if t is list or t is tuple:
        for item in value:
            _check(item, path)
        return
    if t is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise ValueError(f"{path}: object keys must be ASCII strings, got {key!r}")
            # Plain ASCII strings and small ints inline: no call, no path string.
            ti = type(item)
            if (ti is str and item.isascii()) or (ti is int and -MAX_INT <= item <= MAX_INT):
                continue
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, str | int) and not isinstance(value, bool):
        _check(str(value) if isinstance(value, str) else int(value), path)
        return
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for item in value:
            _check(item, path)
        return
    raise ValueError(f"{path}: {type(value).__name__} is not allowed in a ledger entry")


#: Text written as-is inside a JSON string: printable ASCII without ``"`` or ``\\``.
_PLAIN = re.compile(r"[ !#-\[\]-~]*").fullmatch


def _fast_value(value: JSONValue, strings: list[str]) -> str | None:
    t = type(value)
    if t is str:
        strings.append(value)
        return f'"{value}"'
    if t is int:
        return str(value) if -MAX_INT <= value <= MAX_INT else None
    if t is dict:
        return _fast_object(value, strings)
    if t is list or t is tuple:
        items = [_fast_value(item, strings) for item in value]
        return None if None in items else "[" + ",".join(items) + "]"  # type: ignore[arg-type]
    if value is None:
        return "null"
    if t is bool:
        return "true" if value else "false"
    return None  # floats, bytes, subclasses...: the full path decides


def _fast_object(obj: dict[str, JSONValue], strings: list[str]) -> str | None:
    parts = []
    for key in sorted(obj):
        value = obj[key]
        t = type(value)
        if t is str:
            strings.append(value)
            parts.append(f'"{key}":"{value}"')
        elif t is int and -MAX_INT <= value <= MAX_INT:
            parts.append(f'"{key}":{value}')
        else:
            text = _fast_value(value, strings)
            if text is None:
                return None
            parts.append(f'"{key}":{text}')
    strings.extend(obj)
    return "{" + ",".join(parts) + "}"


def _encode_plain(value: Mapping[str, JSONValue]) -> bytes | None:
    """The canonical bytes of an object whose keys and strings need no escaping, else ``None``.

    Every key and string is written verbatim, so the result equals the JSON
    encoder's only when all of them are plain (checked once, on their
    concatenation, at the end); any other value (a float, an escape, non-ASCII
    text, a non-str key) sends the object to the full path.
    """
    if type(value) is not dict:
        return None
    strings: list[str] = []
    try:
        text = _fast_object(value, strings)
        if text is None or not _PLAIN("".join(strings)):
            return None
    except (TypeError, RecursionError):  # keys that are not str; very deep nesting
        return None
    return text.encode("ascii")


def encode(value: Mapping[str, JSONValue]) -> bytes:
    """The canonical bytes of ``value``.

    Raises:
        ValueError: a float, bytes, huge integer, non-ASCII key or lone surrogate.
    """
    # Appends encode every record: plain objects (nearly all) skip the
    # validation pass and the JSON encoder; both paths give the same bytes.
    fast = _encode_plain(value)
    if fast is not None:
        return fast
    _check(value, "$")
    return _ENCODER.encode(value).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a ledger entry")
    return out


def _no_float(text: str) -> float:
    raise ValueError(f"float {text} in a ledger entry")


def decode(data: bytes, *, strict: bool = True) -> dict[str, JSONValue]:
    """Parse entry bytes back into an object.

    ``strict`` also requires the bytes to be canonical (re-encoding them gives
    the same bytes), which rejects duplicate keys, floats and any second
    encoding of the same content. Verification of a whole log passes
    ``strict=False`` for speed: there the leaf hash already pins the bytes.

    Raises:
        ValueError: not UTF-8 JSON, not an object, or (strict) not canonical.
    """
    try:
        text = data.decode("utf-8")
        value = (
            json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float)
            if strict
            else json.loads(text)
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"entry is not UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("entry is not a JSON object")
    if strict and encode(value) != data:
        raise ValueError("entry bytes are not in canonical form")
    return value


def sha256_digest(data: bytes | memoryview) -> str:
    """The ``sha256:<hex>`` digest of a buffer (single shard only; see :func:`digest_of_shards`)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of_shards(size: int, shard_digests: Sequence[bytes]) -> str:
    """Combine per-shard SHA-256 digests into the content digest of ``size`` bytes.

    A content of at most one shard is its plain ``sha256`` digest, so small
    files keep the digest that ``sha256sum`` prints.
    """
    expected = max(1, -(-size // SHARD_SIZE))
    if len(shard_digests) != expected:
        raise ValueError(f"{size} bytes have {expected} shards, got {len(shard_digests)}")
    if expected == 1:
        return "sha256:" + shard_digests[0].hex()
    h = hashlib.sha256(_SHARDS_DOMAIN + size.to_bytes(8, "big"))
    for d in shard_digests:
        h.update(d)
    return "sha256-shards:" + h.hexdigest()


def normalize_digest(text: str) -> str:
    """Accept ``sha256:<hex>``, ``sha256-shards:<hex>`` or a bare 64-hex SHA-256.

    Raises:
        ValueError: anything else.
    """
    value = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", value):
        value = "sha256:" + value
    if not DIGEST_RE.match(value):
        raise ValueError(f"{text!r} is not a content digest (sha256:<64 hex> or 64 hex)")
    return value
