"""The dashboard's configuration: plain data, validated when built."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from trainguard.errors import UsageError
from trainguard.ledger.signing import PublicKey

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "DashboardConfig", "is_loopback"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Environment variable holding the access token (instead of ``--token`` on a command line
#: that other users of the host can read in ``ps``).
TOKEN_ENV = "TRAINGUARD_DASHBOARD_TOKEN"
#: A generated token: 32 random bytes, URL-safe.
_TOKEN_BYTES = 32
#: What a given token may hold: it travels in a header, a query and a cookie unescaped.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to anything: treat it as exposed.
        return False


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads and how it listens.

    Attributes:
        ledger: the ledger URL (``None``: ``$TRAINGUARD_LEDGER``, else the default file).
        host: bind address; anything but loopback makes the dashboard *exposed*.
        port: TCP port (0: any free port).
        token: the access token. Required (and generated when not given) when exposed;
            when given on loopback it is required there too.
        exposed: force the exposed rules (token, no Host check) whatever ``host`` is;
            ``None`` decides from ``host``.
        trusted_keys: public keys whose signed tree heads verification accepts; without
            any, signatures are not checked and the verification page says so.
        verify_jobs: worker processes for ledger verification (default: CPU count).
        access_log: log each request to stderr (tokens redacted).
    """

    ledger: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    exposed: bool | None = None
    trusted_keys: Sequence[PublicKey] = field(default_factory=tuple)
    verify_jobs: int | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port {self.port} is out of range", subject="--port")
        if self.token is not None and not _TOKEN_RE.match(self.token):
            raise UsageError(
                "the access token must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ -",
                subject="--token",
                hint=f"leave it out to have one generated, or set {TOKEN_ENV}",
            )
        object.__setattr__(self, "trusted_keys", tuple(self.trusted_keys))

    @property
    def is_exposed(self) -> bool:
        """Whether other machines can reach the server (then a token is mandatory)."""
        return self.exposed if self.exposed is not None else not is_loopback(self.host)

    @property
    def requires_token(self) -> bool:
        return self.is_exposed or self.token is not None

    def with_token(self) -> DashboardConfig:
        """This config, with a generated token if one is required and none was given."""
        if self.requires_token and self.token is None:
            return replace(self, token=secrets.token_urlsafe(_TOKEN_BYTES))
        return self
