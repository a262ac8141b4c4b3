"""The auth service's one route: $SYS.REQ.USER.AUTH → a client's user JWT, or a refusal."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from loranet import natsauth
from loranet.observability import EventLog

from . import domain


class AuthService:
    """Answers nats-server's auth callout: a client's user JWT, or a refusal."""

    def __init__(self, issuer: SigningKey, log: EventLog, user_ttl_s: float = 0.0) -> None:
        self.issuer = issuer
        self.log = log
        self.user_ttl_s = user_ttl_s
        self.authorized = 0
        self.refused = 0

    async def on_request(self, msg: Any) -> None:
        if not msg.reply:
            return
        try:
            decision = domain.authorize(msg.data.decode(errors="replace"), self.issuer, self.user_ttl_s)
        except natsauth.AuthError as exc:
            # Not a request signed by the server it names: nothing the server would accept can be sent back.
            self.refused += 1
            self.log.warning("auth.bad_request", error=str(exc)[:300])
            return
        if decision.client_id:
            self.authorized += 1
            self.log.info("auth.client", client_id=decision.client_id)
        else:
            self.refused += 1
            self.log.info("auth.refused", reason=decision.error[:300])
        await msg.respond(decision.response.encode())
