"""The S3 GET hot path through obstore (Rust ``object_store``), with fsspec as the fallback.

Measured with 16 GETs in flight on 127.0.0.1 (``benchmarks/s3_client.py``): s3fs/aiobotocore
spends 2.4-3.5 ms of this process's CPU per GET, botocore alone 2-3, obstore ~0.5 (1.1 through
an event loop, which a per-item deadline needs). At 250-500 images/s that is most of a core
given back to the model. Only object GETs take this path: listing, ``info`` and every other
protocol stay on fsspec, and so does S3 whenever obstore is missing or cannot reproduce what
the storage options ask for (``FastS3.from_options`` returns None), or a bucket answers
obstore with something other than the object or "not found" (then that bucket goes back to
fsspec for good, e.g. a bucket in another region than the one configured).

Settings are resolved as s3fs resolves them: ``key``/``secret``/``token``, ``anon``,
``profile``, ``endpoint_url`` (top level or in ``client_kwargs``, else ``AWS_ENDPOINT_URL_S3``
/ ``AWS_ENDPOINT_URL``), ``client_kwargs.region_name``; credentials otherwise from botocore's
own chain (environment, config files, SSO, instance metadata), refreshed through it.
``ALCLI_S3_CLIENT=fsspec`` turns the fast path off (``obstore`` or unset: on when possible).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

#: Storage options this path knows how to honour; any other one sends the pool to fsspec.
_KNOWN_OPTIONS = frozenset(
    {"key", "secret", "token", "anon", "profile", "client_kwargs", "endpoint_url"}
    | {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
)
_KNOWN_CLIENT_KWARGS = frozenset({"endpoint_url", "region_name"})
#: obstore's own retries (it retries connection errors and 5xx with backoff); the item's
#: deadline bounds them all. Fewer than its default 10, so a dead store is seen in seconds.
_MAX_RETRIES = 3


class FastS3:
    """One obstore ``S3Store`` per bucket, shared by every reading thread."""

    def __init__(self, config: dict[str, Any], credentials: Any = None) -> None:
        self._config = config
        self._credentials = credentials  # botocore's refreshable credentials, or None
        self._stores: dict[str, Any] = {}
        self._fallback: set[str] = set()  # buckets obstore could not serve
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FastS3 | None:
        """The fast client for these s3fs storage options, or None (use fsspec)."""
        if os.environ.get("ALCLI_S3_CLIENT", "").strip().lower() == "fsspec":
            return None
        client_kwargs = options.get("client_kwargs") or {}
        if set(options) - _KNOWN_OPTIONS or set(client_kwargs) - _KNOWN_CLIENT_KWARGS:
            return None
        try:
            import obstore  # noqa: F401
        except ImportError:
            return None
        endpoint = (
            options.get("endpoint_url")
            or client_kwargs.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        config: dict[str, Any] = {
            "client_options": {"allow_http": True, "connect_timeout": "10s"},
            "retry_config": {"max_retries": _MAX_RETRIES},
        }
        if endpoint:
            config["endpoint"] = endpoint
        credentials = None
        if options.get("anon"):
            config["skip_signature"] = True
        elif options.get("key") and options.get("secret"):
            config["access_key_id"] = options["key"]
            config["secret_access_key"] = options["secret"]
            if options.get("token"):
                config["token"] = options["token"]
        else:
            resolved = _botocore_session(options.get("profile"))
            if resolved is None:
                return None
            session, credentials = resolved
            if not endpoint and _configured_endpoint(session):
                return None  # an endpoint in the profile: botocore's business, not ours
            config.setdefault("region", session.get_config_variable("region"))
        region = client_kwargs.get("region_name") or config.get("region")
        config["region"] = region or os.environ.get("AWS_REGION") or "us-east-1"
        return cls(config, credentials)

    def serves(self, bucket: str) -> bool:
        return bucket not in self._fallback

    def give_up(self, bucket: str) -> None:
        """obstore could not serve this bucket: fsspec reads it from now on."""
        self._fallback.add(bucket)

    def get(self, bucket: str, key: str, timeout: float | None) -> bytes:
        """The object's bytes; obstore's exceptions as they come (``reading`` maps them).

        With a deadline the GET runs on this client's event loop under ``wait_for``, so the
        request and its retries are cancelled at the deadline (``asyncio.TimeoutError``);
        without one, obstore's blocking call is cheaper still.
        """
        import obstore

        store = self._store(bucket)
        if not timeout:
            return bytes(obstore.get(store, key).bytes())

        async def fetch() -> bytes:
            result = await obstore.get_async(store, key)
            return bytes(await result.bytes_async())

        async def bounded() -> bytes:
            return await asyncio.wait_for(fetch(), timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), self._event_loop()).result()

    def _store(self, bucket: str) -> Any:
        store = self._stores.get(bucket)
        if store is None:
            from obstore.store import S3Store

            with self._lock:
                store = self._stores.get(bucket)
                if store is None:
                    provider = _provider(self._credentials) if self._credentials else None
                    store = S3Store(bucket, credential_provider=provider, **self._config)
                    self._stores[bucket] = store
        return store

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    threading.Thread(
                        target=loop.run_forever, name="alcli-obstore", daemon=True
                    ).start()
                    self._loop = loop
                loop = self._loop
        return loop


def _botocore_session(profile: str | None) -> tuple[Any, Any] | None:
    """botocore's session and credentials (its whole chain), or None when it finds none."""
    try:
        import botocore.session

        session = botocore.session.Session(profile=profile)
        credentials = session.get_credentials()
    except Exception:  # a missing profile, a broken config: s3fs gives the real message
        return None
    return (session, credentials) if credentials is not None else None


def _configured_endpoint(session: Any) -> bool:
    try:
        scoped = session.get_scoped_config()
    except Exception:
        return True
    return bool(scoped.get("endpoint_url") or scoped.get("services"))


def _provider(credentials: Any) -> Any:
    """An obstore credential provider over botocore's (refreshing) credentials."""

    def provide() -> dict[str, Any]:
        frozen = credentials.get_frozen_credentials()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            # asked again after this; botocore refreshes expiring credentials itself
            "expires_at": datetime.now(timezone.utc) + timedelta(minutes=5),
        }

    return provide
