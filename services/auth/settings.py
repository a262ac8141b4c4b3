"""The auth service's settings (LORANET_<FIELD> environment variables).

Two NKEY seeds, each given directly or as a file readable by its owner only:
the callout issuer (an account seed 'SA…', whose public key is the server's
`auth_callout.issuer`) signs the user JWTs it hands out; the service's own
user seed ('SU…', public key in `auth_users`) is how it connects.
"""

from __future__ import annotations

from pathlib import Path

from loranet.settings import CommonSettings, SettingsError
from loranet.signing import read_secret_file


class AuthSettings(CommonSettings):
    auth_issuer_seed: str = ""
    auth_issuer_seed_file: str = ""
    auth_nkey_seed: str = ""
    auth_nkey_seed_file: str = ""
    # Lifetime of a client's authorization (0 = the connection's); the server closes it at expiry
    # and nats-py reconnects, which asks the auth service again.
    auth_user_ttl_s: float = 0.0

    def _seed(self, value: str, file: str, name: str) -> str:
        if value:
            return value.strip()
        if file:
            try:
                return read_secret_file(Path(file)).strip()
            except (OSError, PermissionError) as exc:
                raise SettingsError(f"LORANET_{name.upper()}_FILE: {exc}") from None
        raise SettingsError(f"set LORANET_{name.upper()} or LORANET_{name.upper()}_FILE")

    def issuer_seed(self) -> str:
        return self._seed(self.auth_issuer_seed, self.auth_issuer_seed_file, "auth_issuer_seed")

    def nkey_seed(self) -> str:
        return self._seed(self.auth_nkey_seed, self.auth_nkey_seed_file, "auth_nkey_seed")
