"""The S3 GET hot path through obstore (Rust ``object_store``), with fsspec as the fallback.

Measured with 16 GETs in flight on 127.0.0.1 (``benchmarks/s3_client.py``): s3fs/aiobotocore
spends 2.4-3.5 ms of this process's CPU per GET, botocore alone 2-3, obstore ~0.5. At 250-500
images/s that is most of a core given back to the model.

The per-item deadline is obstore's own: one store per (bucket, deadline) whose request timeout,
backoff and retry budget add up to the deadline (``_deadline_config``), called with obstore's
blocking ``get``. Until session 7 the deadline was ``asyncio.wait_for`` on an event-loop thread:
~0.5 ms more CPU per GET and two more thread hand-offs (tokio, then the loop, then the reader),
each a wake-up that waits for a core the model streams hold: in the pipeline on 2 cores a
20 ms GET took 75-90 ms that way, 50-55 ms blocking (``benchmarks/RESULTS.md``, issue 13).

Object GETs take this path, and so does the listing of an S3 prefix (``FastS3.list_prefix``;
its answer is used only where it cannot differ from s3fs's, see ``listing.list_s3_fast``):
s3fs parsing LIST answers costs ~0.15 ms of this process's CPU per key, obstore ~0.02.
``info``, globs and every other protocol stay on fsspec, and so does S3 whenever obstore is
missing or cannot reproduce what the storage options ask for (``FastS3.from_options``
returns None), or a bucket answers
obstore with something other than the object or "not found" (then that bucket goes back to
fsspec for good, e.g. a bucket in another region than the one configured).

Settings are resolved as s3fs resolves them: ``key``/``secret``/``token``, ``anon``,
``profile``, ``endpoint_url`` (top level or in ``client_kwargs``, else ``AWS_ENDPOINT_URL_S3``
/ ``AWS_ENDPOINT_URL``), ``client_kwargs.region_name``; credentials otherwise from botocore's
own chain (environment, config files, SSO, instance metadata), refreshed through it.
``ALCLI_S3_CLIENT=fsspec`` turns the fast path off (``obstore`` or unset: on when possible).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
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
#: Longest pause between two tries under a deadline (obstore's default is 15 s).
_MAX_BACKOFF_S = 2.0
#: Each LIST page's deadline, retries included; past it the listing goes to s3fs, which
#: then gives its own error (a hung endpoint is not waited on for obstore's default 2 min).
LIST_DEADLINE_S = 60.0


class FastS3:
    """One obstore ``S3Store`` per bucket, shared by every reading thread."""

    def __init__(self, config: dict[str, Any], credentials: Any = None) -> None:
        self._config = config
        self._credentials = credentials  # botocore's refreshable credentials, or None
        self._stores: dict[tuple[str, float | None], Any] = {}  # by (bucket, deadline)
        self._fallback: set[str] = set()  # buckets obstore could not serve
        self._lock = threading.Lock()

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

        With a deadline, every try and pause of the GET fits in ``timeout`` seconds (the
        store's own timeouts, ``_deadline_config``): past it the request is dropped with its
        connection and obstore raises its timeout error.
        """
        import obstore

        return bytes(obstore.get(self._store(bucket, timeout), key).bytes())

    def list_prefix(self, bucket: str, prefix: str) -> Sequence[Mapping[str, Any]]:
        """Every object whose key starts with ``prefix`` (which ends in ``/``), as obstore's
        ``ObjectMeta`` dicts (``path``, ``size``, ``e_tag``, ``last_modified``), all pages.

        obstore's exceptions as they come: ``InvalidPathError`` when a key is not one its
        paths can hold (an empty, ``.`` or ``..`` segment, a control character).
        """
        import obstore

        store = self._store(bucket, LIST_DEADLINE_S)
        return [meta for batch in obstore.list(store, prefix, chunk_size=1000) for meta in batch]

    def _store(self, bucket: str, timeout: float | None) -> Any:
        store = self._stores.get((bucket, timeout))
        if store is None:
            from obstore.store import S3Store

            with self._lock:
                store = self._stores.get((bucket, timeout))
                if store is None:
                    provider = _provider(self._credentials) if self._credentials else None
                    config = self._config | _deadline_config(timeout) if timeout else self._config
                    store = S3Store(bucket, credential_provider=provider, **config)
                    self._stores[(bucket, timeout)] = store
        return store


def _deadline_config(timeout: float) -> dict[str, Any]:
    """obstore settings under which a GET, retries included, gives up within ``timeout`` s.

    obstore stops retrying once ``retry_timeout`` has passed since the first try, but a pause
    (at most ``max_backoff``) and one more try (at most the request ``timeout``) may follow:
    three quarters of the deadline per try and one quarter for the tries before the last,
    pauses included, add up to the deadline. Retries are for failures that come fast (a reset,
    a 503); a hung store is given up at 3/4 of the deadline.
    """
    per_try = 0.75 * timeout
    max_backoff = min(_MAX_BACKOFF_S, timeout / 16)
    return {
        "client_options": {
            "allow_http": True,
            "timeout": timedelta(seconds=per_try),
            "connect_timeout": timedelta(seconds=min(10.0, per_try)),
        },
        "retry_config": {
            "max_retries": _MAX_RETRIES,
            "retry_timeout": timedelta(seconds=max(0.0, timeout - per_try - max_backoff)),
            "backoff": {
                "init_backoff": timedelta(seconds=min(0.1, max_backoff)),
                "max_backoff": timedelta(seconds=max_backoff),
            },
        },
    }


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
