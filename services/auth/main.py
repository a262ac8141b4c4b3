"""`python -m services.auth`: settings → NATS (as the auth NKEY user) → answer $SYS.REQ.USER.AUTH.

Replicas share the requests through a queue group; each needs the same issuer seed."""

from __future__ import annotations

from loranet import natsauth
from loranet.runtime import Runtime, run_service

from .handlers import AuthService
from .settings import AuthSettings


async def main(settings: AuthSettings | None = None) -> None:
    settings = settings or AuthSettings.from_env()
    issuer = natsauth.issuer_from_seed(settings.issuer_seed())
    async with Runtime(
        "auth", settings, topology=False, connect_options={"nkeys_seed_str": settings.nkey_seed()}
    ) as rt:
        service = AuthService(issuer, rt.log, settings.auth_user_ttl_s)
        await rt.subscribe(natsauth.AUTH_CALLOUT_SUBJECT, service.on_request, queue="auth")
        await rt.serve_forever()


def run() -> None:
    run_service(main)
