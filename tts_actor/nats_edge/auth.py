"""How this instance (and the CLI) authenticates to NATS: settings -> ``nats.connect`` keyword arguments.

One of user+password, token, NKey seed file or creds file (JWT + seed), plus TLS with a private CA and a
client certificate; and the inbox prefix (``NATS_INBOX_PREFIX``) under which the user may read its replies.
``ops/nats.conf`` defines the roles a server grants them.
"""

from __future__ import annotations

import ssl
from typing import Any

from tts_actor.config import ConfigError, Settings


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.aio.client.Client.connect``; empty when NATS needs no credentials."""
    options: dict[str, Any] = {}
    if settings.nats_user:
        options.update(user=settings.nats_user, password=settings.nats_password)
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_nkey_seed_file:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    if settings.nats_creds_file:
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_inbox_prefix:  # replies arrive under it: the only inbox a secured server lets this user read
        options["inbox_prefix"] = settings.nats_inbox_prefix
    if settings.nats_tls_ca or settings.nats_tls_cert:
        options["tls"] = tls_context(settings)
    return options


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the server against NATS_CA (else the system store); present NATS_CERT/NATS_KEY when set."""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None,
        )
        if settings.nats_tls_cert and settings.nats_tls_key:
            context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"NATS_CA / NATS_CERT / NATS_KEY cannot be used: {exc}") from None
    return context
