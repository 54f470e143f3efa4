"""Opening the service's JetStream object stores: one way for the profiles and the consent records.

Each is made on first use, replicated like the rest of the fleet's stores (``TTS_JS_REPLICAS``), on file
storage: personal data that must survive a server restart until its owner deletes it.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore


async def open_object_store(nc: Client, bucket: str, description: str, replicas: int, timeout_s: float) -> ObjectStore:
    """The bucket, created (file storage, ``replicas`` copies) when it does not exist yet."""
    js = nc.jetstream(timeout=timeout_s)
    try:
        return await js.object_store(bucket)
    except BucketNotFoundError:
        return await js.create_object_store(
            bucket, description=description, replicas=replicas, storage=StorageType.FILE
        )
