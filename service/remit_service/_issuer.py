"""Sign v1 capability tokens with the newest issuer key (PyJWT, EdDSA).

Minting uses PyJWT (a well-kept, cross-checked JOSE implementation); verifying
uses remit's own strict parser on libsodium for speed. Tests check that each
accepts what the other produces.
"""

from __future__ import annotations

from typing import Any

import jwt
from remit._token import ALG, TYP

from ._keystore import KeyStore

__all__ = ["Issuer"]


class Issuer:
    def __init__(self, keystore: KeyStore) -> None:
        self._keystore = keystore

    def sign(self, claims: dict[str, Any]) -> str:
        key = self._keystore.signing_key()
        return jwt.encode(claims, key.private, algorithm=ALG, headers={"kid": key.kid, "typ": TYP})
