"""A real Label Studio server on 127.0.0.1 for the tests, from its own virtualenv.

label-studio 1.23.2 pins ~100 packages exactly (Django among them), so it lives in its own
virtualenv (``make test`` builds ``.venv-labelstudio``; ``ALCLI_LABEL_STUDIO_VENV`` names
another), never in alcli's. Migrating a fresh data folder takes minutes on two busy cores, so
``template`` initialises one data folder once (``label-studio init ... --user-token T
--enable-legacy-api-token``: a token made without that flag gets 401 on every call) inside the
virtualenv, and each test session starts its server from a copy of it. The server runs with
its own HOME, no update check, no error reporting, no analytics, local-files serving on under
the session's document root; it is stopped with SIGTERM (its process group).

``python tests/labelstudio_server.py template [VENV]`` builds the template (the Makefile runs it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_ENV = "ALCLI_LABEL_STUDIO_VENV"
DEFAULT_VENV = REPO / ".venv-labelstudio"
#: The template user's legacy API token (40 hex digits, as Label Studio's tokens are).
TOKEN = "a1c1a1c1a1c1a1c1a1c1a1c1a1c1a1c1a1c1a1c1"
USER, PASSWORD = "alcli@example.com", "alcli-test-password"
TEMPLATE = "alcli-template"
START_TIMEOUT_S = 240.0


def venv_path() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


def executable(venv: Path) -> Path | None:
    path = venv / "bin" / "label-studio"
    return path if path.exists() else None


def _env(home: Path, data: Path, document_root: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO"))}
    env.update(
        HOME=str(home),
        LABEL_STUDIO_BASE_DATA_DIR=str(data),
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",  # no call to PyPI at start
        SENTRY_DSN="",  # no error reporting
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        PYTHONUNBUFFERED="1",
    )
    if document_root is not None:
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(document_root)
    return env


def template(venv: Path) -> Path:
    """The migrated data folder in ``venv``, built once (under a lock; minutes)."""
    venv = Path(venv).resolve()  # `label-studio init` runs in a scratch folder
    target = venv / TEMPLATE
    if (target / "label_studio.sqlite3").exists():
        return target
    program = executable(venv)
    if program is None:
        raise FileNotFoundError(f"no label-studio in {venv}")
    with open(venv / f".{TEMPLATE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "label_studio.sqlite3").exists():
            return target
        with tempfile.TemporaryDirectory(dir=venv) as work:
            data = Path(work) / "data"
            home = Path(work) / "home"
            home.mkdir()
            subprocess.run(
                [
                    str(program),
                    "init",
                    str(Path(work) / "project"),
                    "--username",
                    USER,
                    "--password",
                    PASSWORD,
                    "--user-token",
                    TOKEN,
                    "--enable-legacy-api-token",
                    "--no-browser",
                ],
                env=_env(home, data),
                cwd=work,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            os.replace(data, target)
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabelStudioServer:
    """One server from a copy of the template; a context manager. ``api(...)`` calls it."""

    def __init__(self, venv: Path, workdir: Path, document_root: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.document_root = document_root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LabelStudioServer:
        program = executable(self.venv)
        if program is None:
            raise FileNotFoundError(f"no label-studio in {self.venv}")
        data = self.workdir / "data"
        shutil.copytree(template(self.venv), data)
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(program),
                    "start",
                    "--port",
                    str(self.port),
                    "--internal-host",
                    "127.0.0.1",
                    "--no-browser",
                ],
                env=_env(home, data, self.document_root),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"label-studio exited with {self.process.returncode}: {tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/health", timeout=5) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"label-studio did not answer within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # --- the REST API, as a person's browser or script would use it ------------------------

    def api(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}"
            ) from None
        if raw:
            return text
        return json.loads(text) if text.strip() else None

    def create_project(self, classes: list[str], title: str = "alcli test") -> int:
        choices = "".join(f'<Choice value="{c}"/>' for c in classes)
        config = (
            '<View><Image name="image" value="$image"/>'
            f'<Choices name="choice" toName="image">{choices}</Choices></View>'
        )
        project = self.api("POST", "/api/projects/", {"title": title, "label_config": config})
        return int(project["id"])

    def link_local_files(self, project: int, folder: Path) -> None:
        """A local-files source storage: what makes /data/local-files/ URLs serve."""
        self.api(
            "POST",
            "/api/storages/localfiles/",
            {"project": project, "path": str(folder), "use_blob_urls": False, "title": "pool"},
        )

    def tasks(self, project: int) -> list[dict[str, Any]]:
        return list(self.export(project, "JSON", all_tasks=True))

    def export(self, project: int, kind: str, *, all_tasks: bool) -> Any:
        query = f"exportType={kind}&download_all_tasks={'true' if all_tasks else 'false'}"
        text = self.api("GET", f"/api/projects/{project}/export?{query}", raw=True)
        return json.loads(text) if kind.startswith("JSON") else text.decode()

    def annotate(self, task: int, label: str, *, cancelled: bool = False, **extra: Any) -> int:
        result = [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        body = {"result": [] if cancelled else result, "was_cancelled": cancelled, **extra}
        return int(self.api("POST", f"/api/tasks/{task}/annotations/", body)["id"])


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "template":
        sys.exit("usage: labelstudio_server.py template [VENV]")
    where = Path(sys.argv[2]) if len(sys.argv) > 2 else venv_path()
    print(f"Label Studio template: {template(where)}")
