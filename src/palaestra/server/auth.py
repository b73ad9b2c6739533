"""Who is calling: bearer tokens name principals; without auth, each connection is its own principal.

Metadata a client may send (everything else is ignored):

* ``authorization: Bearer <token>`` - required when the server has tokens (the scheme is case-insensitive).
  The token names a principal (``[principals.NAME]`` in the config, or ``auth_token`` for the
  principal ``default``); its episodes and quotas are that principal's. No header can claim another
  principal's episodes: identity comes from the token alone.

Without tokens, the principal is the caller's connection (its peer address), which a client cannot choose.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from palaestra.server.config import ServerConfig


@dataclass(frozen=True)
class Principal:
    name: str
    max_episodes: int
    max_sandboxes: int  # 0: no per-principal limit


class Authenticator:
    """Maps the `authorization` header of a call to its principal, comparing tokens in constant time."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._tokens: list[tuple[bytes, Principal]] = []
        if config.auth_token:
            self._tokens.append((config.auth_token.encode(), self._principal("default", 0, 0)))
        for name, entry in config.principals.items():
            principal = self._principal(name, entry.max_episodes, entry.max_sandboxes)
            self._tokens.append((entry.resolved_token().encode(), principal))

    def _principal(self, name: str, max_episodes: int, max_sandboxes: int) -> Principal:
        return Principal(
            name,
            max_episodes or self.config.max_episodes_per_client,
            max_sandboxes or self.config.max_sandboxes_per_client,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def from_header(self, value: str | None) -> Principal | None:
        """The principal whose token the header carries; None when it carries no known token."""
        if not value:
            return None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = token.strip().encode()
        found: Principal | None = None
        for expected, principal in self._tokens:  # no early exit: every token is compared
            if hmac.compare_digest(presented, expected):
                found = principal
        return found

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal | None:
        for key, value in metadata or ():
            if key == "authorization":
                return self.from_header(value if isinstance(value, str) else value.decode(errors="replace"))
        return None

    def identify(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller of a call that got past the interceptor (so its token, if required, is valid)."""
        if self.enabled:
            principal = self.from_metadata(context.invocation_metadata())
            if principal is not None:
                return principal
        # No auth: the connection is the identity (a client cannot pick another's peer address).
        return self._principal(f"peer:{context.peer()}", 0, 0)
