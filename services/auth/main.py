"""`python -m services.auth`: settings → NATS (as the auth NKEY user) → answer $SYS.REQ.USER.AUTH.

Replicas share the requests through a queue group; each needs the same issuer seed."""

from __future__ import annotations

import asyncio

from loranet import natsauth
from loranet.runtime import Runtime

from .handlers import AuthCallout
from .settings import AuthSettings


async def main() -> None:
    settings = AuthSettings.from_env()
    issuer = natsauth.issuer_from_seed(settings.issuer_seed())
    async with Runtime("auth", settings, topology=False,
                       connect_options={"nkeys_seed_str": settings.nkey_seed()}) as rt:
        callout = AuthCallout(issuer, rt.log, settings.auth_user_ttl_s)
        sub = await rt.nc.subscribe(natsauth.AUTH_CALLOUT_SUBJECT, queue="auth", cb=callout.on_request)
        rt._subs.append(sub)
        await rt.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
