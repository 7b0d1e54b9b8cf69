"""Payment gateways. `BogusGateway` is Solidus's test gateway: 4111111111111111 (or "1")
succeeds with authorization 12345; any other number fails with "Bogus Gateway: Forced
failure". Every call carries an idempotency key so a retried step never charges twice."""
from __future__ import annotations

import hashlib

SUCCESS_NUMBERS = {"4111111111111111", "4242424242424242", "1"}


def vault_token(number: str, salt: str) -> str:
    return "tok_" + hashlib.sha256(f"{salt}:{number}".encode()).hexdigest()[:24]
