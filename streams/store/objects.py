"""Write-once object storage (``ledger.tiles.Blobs``): S3 through boto3, and a directory for tests.

S3 conditional writes: ``put_object(..., IfNoneMatch="*")`` is refused with HTTP 412 when the key exists
(AWS S3, SeaweedFS, MinIO); pyarrow's S3 filesystem cannot send that header, so blobs go through boto3.
Connection and credential failures become ``StoreError`` naming the endpoint and what to check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from streams.exceptions import StoreError


def parse_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"{url!r} is not an s3://BUCKET/PREFIX location")
    return parsed.netloc, parsed.path.strip("/")


def s3_client(*, endpoint: str | None = None) -> Any:
    """A boto3 S3 client from the standard AWS_* variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION), path-style addressing, few retries and short timeouts so a wrong
    endpoint fails in seconds."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=3, read_timeout=30, request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
    session = boto3.session.Session()  # a new session reads the AWS_* variables now (the default one caches them)
    return session.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                          config=config)


def explain(exc: Exception, *, endpoint: str | None, bucket: str) -> StoreError:
    """A ``StoreError`` that tells the user what to fix, for a boto3/botocore or pyarrow S3 failure."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = endpoint or "the default AWS endpoint"
    if isinstance(exc, NoCredentialsError):
        return StoreError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, EndpointConnectionError) or "connect" in str(exc).lower() and not isinstance(exc, ClientError):
        return StoreError(f"cannot reach the object store at {where}: check AWS_ENDPOINT_URL and that it is running")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return StoreError(f"bucket {bucket!r} does not exist at {where}: create it first "
                              "(`meterseal store init` or your object store's tools)")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
            return StoreError(f"the object store at {where} refused the credentials ({code}): "
                              "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return StoreError(f"object store error at {where} ({code}): {exc}")
    return StoreError(f"object store error at {where}: {exc}")


class S3Blobs:
    """``Blobs`` in one bucket under a key prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket = client, bucket
        self.prefix = (prefix.strip("/") + "/") if prefix.strip("/") else ""
        self.endpoint = client.meta.endpoint_url

    def _fail(self, exc: Exception) -> StoreError:
        return explain(exc, endpoint=self.endpoint, bucket=self.bucket)

    def check(self) -> None:
        """Fail with a clear ``StoreError`` unless the bucket exists and the credentials may read it."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one explained StoreError
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                exc.response["Error"]["Code"] = "NoSuchBucket"
            raise self._fail(exc) from exc

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail(exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._fail(exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist (``If-None-Match: *``); False if it did."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise self._fail(exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc

    def put(self, key: str, data: bytes) -> None:
        """Write or replace ``key`` (for mutable metadata only, never for tiles or checkpoints)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc

    def delete(self, key: str) -> bool:
        """Remove ``key`` (subject keys, erased data); True if it was there."""
        try:
            found = self.exists(key)
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
            return found
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc

    def list(self, prefix: str) -> list[str]:
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                out += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc
        return sorted(out)


class DirBlobs:
    """``Blobs`` as files under a directory (create = ``O_CREAT | O_EXCL``): tests and local trials."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def create(self, key: str, data: bytes) -> bool:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: readers never see half a blob
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        try:
            (self.root / key).unlink()
            return True
        except FileNotFoundError:
            return False

    def list(self, prefix: str) -> list[str]:
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root  # walk only the prefix's folder
        found = [str(p.relative_to(self.root)) for p in start.rglob("*") if p.is_file() and not p.name.startswith(".")] \
            if start.exists() else []
        return sorted(k for k in found if k.startswith(prefix))


def json_objects(blobs: Any, prefix: str) -> list[tuple[str, Any]]:
    """``(key, parsed document)`` of every ``.json`` object under ``prefix``, in key order (one gone between the
    listing and its read — deleted meanwhile — is left out)."""
    import json

    found = []
    for key in blobs.list(prefix):
        if key.endswith(".json"):
            raw = blobs.get(key)
            if raw is not None:
                found.append((key, json.loads(raw)))
    return found
