"""Where the ledger lives: one URL rule for every command and the Python API.

The URL comes from ``--ledger``, else the ``TRAINGUARD_LEDGER`` environment
variable, else a SQLite file under the user's data directory
(``$XDG_DATA_HOME/trainguard/ledger.db``, by default
``~/.local/share/trainguard/ledger.db``).

* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the
  SQLAlchemy convention: the path is everything after ``sqlite:///``); a
  bare file path is accepted as a SQLite path too. ``?synchronous=normal``
  trades power-loss durability of the last commits for speed.
* ``postgresql://user@host:port/dbname`` (or ``postgres://``), any libpq URI;
  ``?schema=NAME`` keeps the ledger's tables in schema ``NAME`` (default
  ``trainguard``), so several ledgers can share one database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from trainguard.errors import UsageError

__all__ = ["ENV_VAR", "LedgerURL", "data_dir", "default_url", "parse_url", "resolve_url"]

ENV_VAR = "TRAINGUARD_LEDGER"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class LedgerURL:
    """A parsed ledger location.

    Attributes:
        scheme: ``"sqlite"`` or ``"postgresql"``.
        path: the SQLite database file (SQLite only).
        dsn: the libpq connection URI without trainguard's own parameters (PostgreSQL only).
        schema: the PostgreSQL schema holding the tables.
        synchronous: SQLite's ``synchronous`` pragma: ``full`` (default) makes every
            acknowledged append survive a power loss; ``normal`` survives a crash of
            the writer (kill -9) but not of the machine, and commits faster.
        text: the URL as given, with any password masked, for messages.
    """

    scheme: str
    text: str
    path: Path | None = None
    dsn: str | None = None
    schema: str = "trainguard"
    synchronous: str = "full"


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/trainguard`` or ``~/.local/share/trainguard``."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trainguard"


def default_url(env: Mapping[str, str] | None = None) -> str:
    return f"sqlite:///{(data_dir(env) / 'ledger.db').resolve()}"


def _mask(text: str) -> str:
    parts = urlsplit(text)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return text


def parse_url(text: str) -> LedgerURL:
    """Parse a ledger URL (see the module docstring).

    Raises:
        UsageError: an unknown scheme or a malformed URL.
    """
    if not text:
        raise UsageError(
            "empty ledger URL", hint=f"use sqlite:///PATH or postgresql://... ({ENV_VAR})"
        )
    if text.startswith("sqlite:"):
        body, _, options = text.partition("?")
        if not body.startswith("sqlite:///") or len(body) == len("sqlite:///"):
            raise UsageError(
                "a SQLite ledger URL is sqlite:///relative/path or sqlite:////absolute/path",
                subject=text,
            )
        sync = "full"
        for key, value in parse_qsl(options, keep_blank_values=True):
            if key != "synchronous" or value not in ("full", "normal"):
                raise UsageError(
                    f"unknown SQLite ledger option {key}={value}",
                    subject=text,
                    expected="synchronous=full (default) or synchronous=normal",
                )
            sync = value
        return LedgerURL("sqlite", text, path=Path(body[len("sqlite:///") :]), synchronous=sync)
    if text.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        schema = "trainguard"
        kept = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "schema":
                schema = value
            else:
                kept.append((key, value))
        if not _SCHEMA_RE.match(schema):
            raise UsageError(
                "a ledger schema name is lower-case letters, digits and _ (at most 63)",
                subject=schema,
            )
        dsn = urlunsplit(parts._replace(query=urlencode(kept)))
        return LedgerURL("postgresql", _mask(text), dsn=dsn, schema=schema)
    if "://" in text:
        raise UsageError(
            f"unsupported ledger URL scheme in {_mask(text)!r}",
            expected="sqlite:///PATH or postgresql://USER@HOST/DB",
        )
    return LedgerURL("sqlite", f"sqlite:///{text}", path=Path(text))


def resolve_url(explicit: str | None = None, env: Mapping[str, str] | None = None) -> LedgerURL:
    """The ledger URL by the one rule: explicit, else ``$TRAINGUARD_LEDGER``, else the default."""
    env = os.environ if env is None else env
    return parse_url(explicit or env.get(ENV_VAR) or default_url(env))
