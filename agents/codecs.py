"""A Faust codec for meterseal's Avro schemas (fastavro, single-object encoding).

>>> codec = AvroCodec("wrapped_key")
>>> record = {"key_id": "00" * 16, "scheme": "rsa_oaep_3072_sha256", "owner_fingerprint": "f",
...           "wrapped": b"w", "created_at_ms": 1, "worker": "h:1"}
>>> codec.loads(codec.dumps(record)) == record
True
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

import schemas


class AvroCodec(codecs.Codec):
    """Encodes dicts as the named schema's newest version; decodes any known version, resolved to the newest."""

    def __init__(self, schema: str, **kwargs: Any) -> None:
        schemas.get(schema)  # fail at construction for an unknown schema
        super().__init__(schema=schema, **kwargs)
        self.schema = schema

    def _dumps(self, obj: Any) -> bytes:
        return schemas.encode(self.schema, obj)

    def _loads(self, s: bytes) -> Any:
        return schemas.decode(self.schema, s)


def codec_name(schema: str) -> str:
    return f"meterseal-avro-{schema}"


def register_all() -> None:
    """Make ``meterseal-avro-<schema>`` usable as a ``value_serializer`` (idempotent)."""
    for name in schemas.names():
        codecs.register(codec_name(name), AvroCodec(name))
