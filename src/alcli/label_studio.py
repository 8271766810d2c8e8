"""A Label Studio server's REST API, as far as alcli uses it: a project, import, export.

Only the standard library's HTTP client: the oracle needs three calls, not an SDK. The token
(``LABEL_STUDIO_API_KEY``, a legacy API token: ``Authorization: Token ...``) is sent in a
header and never appears in a message, a log line or a saved file.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from alcli.errors import OracleError, UsageError

#: The environment variable that holds the API token.
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
#: ``--oracle`` spec prefix: ``label-studio://HOST:PORT/PROJECT_ID`` (HTTP).
SCHEME = "label-studio://"


@dataclass(frozen=True)
class Project:
    """One project on one server; ``url`` is ``http://HOST:PORT`` (no token in it)."""

    url: str
    project_id: int
    token: str = field(repr=False)
    timeout_s: float = 120.0

    @classmethod
    def from_spec(cls, spec: str, *, token: str | None = None) -> Project:
        """``label-studio://HOST:PORT/PROJECT_ID`` with the token from ``LABEL_STUDIO_API_KEY``."""
        parts = urlsplit("http://" + spec[len(SCHEME) :]) if spec.startswith(SCHEME) else None
        path = parts.path.strip("/") if parts else ""
        if parts is None or not parts.hostname or not path.isdigit():
            raise UsageError(
                f"bad Label Studio oracle {spec!r}",
                hint="write it as label-studio://HOST:PORT/PROJECT_ID, e.g. "
                "label-studio://127.0.0.1:8080/1",
            )
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        if not token.strip():
            raise UsageError(
                f"the Label Studio oracle needs an API token in {TOKEN_ENV}",
                hint="copy it from Account & Settings (a legacy token) and export it",
            )
        return cls(url=f"http://{parts.netloc}", project_id=int(path), token=token.strip())

    @property
    def where(self) -> str:
        """Where a person labels: the project's page."""
        return f"{self.url}/projects/{self.project_id}/data"

    def check(self) -> dict[str, Any]:
        """The project's settings; a ``UsageError`` if the token or the id is wrong."""
        answer = self._call("GET", f"/api/projects/{self.project_id}/")
        return answer if isinstance(answer, dict) else {}

    def export(self, *, all_tasks: bool = True) -> list[Any]:
        """Every task (``all_tasks``) or the annotated ones, in the JSON export format."""
        query = f"exportType=JSON&download_all_tasks={'true' if all_tasks else 'false'}"
        answer = self._call("GET", f"/api/projects/{self.project_id}/export?{query}")
        if not isinstance(answer, list):
            raise OracleError(f"Label Studio at {self.url}: the export is not a list of tasks")
        return answer

    def import_tasks(self, tasks: Sequence[dict[str, Any]]) -> int:
        """Import ``tasks``; how many the server says it added."""
        answer = self._call("POST", f"/api/projects/{self.project_id}/import", list(tasks))
        count = answer.get("task_count") if isinstance(answer, dict) else None
        return int(count) if isinstance(count, int) else len(tasks)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        endpoint = path.split("?", maxsplit=1)[0]
        data = None if body is None else json.dumps(body).encode("utf-8", "surrogateescape")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(exc, method, path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OracleError(
                f"cannot reach Label Studio at {self.url}: {reason}",
                hint="start the server, or check HOST:PORT, then resume",
            ) from None
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            raise OracleError(
                f"Label Studio at {self.url}: {method} {endpoint} did not answer JSON"
            ) from None

    def _refused(self, exc: urllib.error.HTTPError, method: str, path: str) -> Exception:
        where = f"Label Studio at {self.url}"
        if exc.code in (401, 403):
            return UsageError(
                f"{where} refused the API token (HTTP {exc.code})",
                hint=f"set {TOKEN_ENV} to a legacy API token of a member of the project",
            )
        if exc.code == 404 and path.rstrip("/").endswith(f"projects/{self.project_id}"):
            return UsageError(f"{where} has no project {self.project_id}")
        try:
            detail = exc.read().decode("utf-8", "replace").strip().replace("\n", " ")[:300]
        except OSError:
            detail = ""
        return OracleError(
            f"{where}: {method} {path.split('?', maxsplit=1)[0]} failed with HTTP {exc.code}"
            + (f": {detail}" if detail else "")
        )
