"""Soak: embed a large messy pool with the real CLI while SIGKILLing it, then check nothing is lost.

The pool: ``--n`` small PNGs (16x16 RGB noise, deterministic from ``--seed`` through one
``numpy.random.Generator``) named by a ``.txt`` manifest, ``--bad-fraction`` of them bad, the
kinds taking turns: corrupt bytes behind a PNG signature, a truncated PNG, a text file named
``.png``, an empty file, a file the manifest names that does not exist, a dangling symlink.
With ``--s3`` the same pool is uploaded to a moto S3 server (tests/s3server.py, its own
process) and named by ``s3://`` URIs; the missing kind becomes a deleted object, there are no
symlinks, and one more good-looking object hangs on GET when tests/faultproxy.py (branch
i11-s3) is importable, else the report says that part was skipped.

The runs: ``alcli embed MANIFEST --json`` in a subprocess (``--model resnet18 --weights none
--image-size 16`` by default: the images' own size; resnet18 runs about twice as fast as at
32 px on the 2-core dev box, which brings 200,000 items within minutes), SIGKILLed
``--kills`` times at seeded moments and rerun each time, then run to completion and once
more warm. The moments: the first kill lands a seeded
0.2-3 s after start (pool resolution, model build), the middle ones when the pool's seeded
fraction has gone through the model, the last a seeded 0-0.2 s after a run's last forward
pass (its final stores and compaction).

What counts, and how it is counted honestly:

- ``items_lost``: good items without an embedding in the cache after the warm run (its
  ``cached`` count) plus bad items it does not report as skipped with a reason. Must be 0.
- ``items_recomputed``: forward passes beyond one per good item. Each CLI subprocess runs
  with a counter around ``Backbone.embed`` (rows through the model) and
  ``EmbeddingCache.store`` (rows durably stored): one byte per row appended to a file, so a
  SIGKILL loses nothing counted. Nothing else in the CLI changes. The total is exact; per
  kill, ``recomputed`` = rows through the model minus rows whose ``store`` returned is an
  upper bound (a segment renamed but not committed when the kill came is adopted by the next
  open, and a kill can fall between a commit and its count). Must be at most one batch per
  kill in total.
- ``identical``: the final embeddings of a subset (``--compare-n`` good items, evenly spread;
  the whole pool when it is that small) against an uninterrupted cold run of that subset into
  its own cache, byte for byte (both read back with ``EmbeddingCache.lookup``).
- ``peak_rss_mib``: each subprocess's own peak RSS (VmHWM, read every 10 ms, right before
  a kill, and by the process itself at exit), so the parent's memory is never counted.
  ``--rss-n`` runs the same soak on a smaller pool to compare peaks.

Runs the CLI from wherever ``alcli`` imports, so ``PYTHONPATH=/other/worktree/src`` soaks
another branch. ``--bad-kinds`` limits the bad kinds (e.g. to run on code that cannot yet
skip a missing manifest entry).

    .venv/bin/python benchmarks/soak.py --n 3000 --json                  # a quick soak
    .venv/bin/python benchmarks/soak.py --json > benchmarks/soak.json    # 200,000 + 20,000
    .venv/bin/python benchmarks/soak.py --s3 --n 2000 --json

Progress goes to stderr; the report to stdout (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py, s3server.py, faultproxy.py

from helpers import PNG_SIGNATURE, png_bytes  # noqa: E402

IMAGE_SIDE = 16
FILES_PER_FOLDER = 1000
LOCAL_KINDS = ("corrupt", "truncated", "not_image", "empty", "missing", "dangling_symlink")
S3_KINDS = ("corrupt", "truncated", "not_image", "empty", "deleted")
S3_PREFIX = "soak"
HANG_KIND = "hanging"
#: Moments a run is killed at (see the module docstring).
START, PROGRESS, END = "start", "progress", "end"
POLL_S = 0.01

# --------------------------------------------------------------------------- the child


def child_main(run_dir: Path, cli_args: list[str]) -> None:
    """``alcli CLI_ARGS`` with rows counted through the model and into the cache, and its
    peak RSS written at exit.

    ``alcli.models`` imports torch, which a warm run never pays for, so the counter is put
    around ``Backbone.embed`` only when something imports that module.
    """
    import atexit
    import importlib.abc
    import importlib.util

    forwarded_path, stored_path = str(run_dir / "forwarded"), str(run_dir / "stored")
    atexit.register(lambda: (run_dir / "peak_kib").write_text(str(peak_rss_kib("self"))))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT

    def counting(method: Callable[..., Any], path: str, rows: Callable[..., int]) -> Any:
        fd = os.open(path, flags, 0o644)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            os.write(fd, b"." * rows(args, result))  # one byte per row; O_APPEND is atomic
            return result

        return wrapper

    from alcli.cache import EmbeddingCache

    EmbeddingCache.store = counting(EmbeddingCache.store, stored_path, lambda args, _: len(args[2]))

    class CountForwardPasses(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "alcli.models":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            assert spec is not None
            assert spec.loader is not None
            execute = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                execute(module)
                module.Backbone.embed = counting(
                    module.Backbone.embed, forwarded_path, lambda _, out: len(out)
                )

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, CountForwardPasses())
    from alcli.cli import main

    sys.argv = ["alcli", *cli_args]
    main()


# --------------------------------------------------------------------------- the pool


@dataclass
class SoakPool:
    """The manifest, and which of its URIs are bad and how."""

    manifest: Path
    uris: list[str]
    bad: dict[str, str]  # uri -> kind
    files: list[Path]  # the local file behind each uri (uploaded for S3)

    @property
    def good(self) -> list[str]:
        return [uri for uri in self.uris if uri not in self.bad]


def bad_bytes(kind: str, rng: np.random.Generator) -> bytes | None:
    """The file a bad item of ``kind`` is made of (None: no file at all)."""
    if kind == "corrupt":
        return PNG_SIGNATURE + rng.bytes(200)
    if kind == "truncated":
        return png_bytes(rng, IMAGE_SIDE)[:60]
    if kind == "not_image":
        return b"this is not an image\n"
    if kind == "empty":
        return b""
    return None  # missing, deleted, dangling_symlink


def make_pool(
    root: Path, n: int, bad_fraction: float, kinds: tuple[str, ...], seed: int
) -> SoakPool:
    """Write the pool's files and manifest under ``root``; reuse them if already written."""
    rng = np.random.default_rng(seed)
    n_bad = round(n * bad_fraction)
    bad_at = np.sort(rng.choice(n, size=n_bad, replace=False)) if n_bad else np.array([], int)
    kind_of = {int(i): kinds[j % len(kinds)] for j, i in enumerate(bad_at)}
    files = [root / "images" / f"{i // FILES_PER_FOLDER:04d}" / f"{i:07d}.png" for i in range(n)]
    bad = {str(files[i]): kind for i, kind in kind_of.items()}
    manifest = root / "pool.txt"
    pool = SoakPool(manifest, [str(path) for path in files], bad, files)
    stamp = root / "stamp.json"
    description = {"n": n, "bad": sorted(kind_of.items()), "seed": seed, "side": IMAGE_SIDE}
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(description)):
        return pool
    if root.exists():
        shutil.rmtree(root)
    for i, path in enumerate(files):
        if i % FILES_PER_FOLDER == 0:
            path.parent.mkdir(parents=True)
        kind = kind_of.get(i)
        if kind == "dangling_symlink":
            path.symlink_to(path.with_name(f"gone-{i}.png"))
            continue
        data = png_bytes(rng, IMAGE_SIDE) if kind is None else bad_bytes(kind, rng)
        if data is not None:
            path.write_bytes(data)
    manifest.write_text("".join(f"{uri}\n" for uri in pool.uris))
    stamp.write_text(json.dumps(description))
    return pool


def write_manifest(path: Path, uris: list[str]) -> Path:
    path.write_text("".join(f"{uri}\n" for uri in uris))
    return path


# --------------------------------------------------------------------------- one run


@dataclass
class Kill:
    """When to SIGKILL a run: ``at`` seconds after start, ``delay`` seconds after ``at`` rows
    went through the model over all runs, or ``at`` seconds after the run's last forward pass."""

    moment: str
    at: float
    delay: float = 0.0


@dataclass
class Run:
    """One CLI subprocess, as the parent saw it."""

    args: list[str]
    killed: bool = False
    kill: dict[str, Any] | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    forwarded: int = 0  # rows through the model
    stored: int = 0  # rows whose store() returned
    summary: dict[str, Any] | None = None
    stderr_tail: str = ""
    hung: bool = False
    tmp_files_after: int = 0  # .tmp files in the segments folder after the run

    def brief(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("args", "summary")}
        if not self.stderr_tail or self.exit_code == 0 or self.killed:
            out.pop("stderr_tail")
        out["recomputed"] = self.forwarded - self.stored
        if self.summary is not None:
            out["cached"] = self.summary.get("cached")
            out["embedded"] = self.summary.get("embedded")
            out["failed"] = self.summary.get("failed")
        return out


def peak_rss_kib(pid: int | str) -> int:
    """VmHWM: the peak RSS of this process's own address space (0 once it has exited).

    Not ``wait4``'s ``ru_maxrss``: Linux carries the parent's peak over through fork and
    exec into it, so a child of a parent that imported torch would report the parent's.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def run_cli(
    cli_args: list[str],
    work: Path,
    *,
    kill: Kill | None = None,
    forwarded_before: int = 0,
    remaining: int = 0,
    timeout_s: float,
) -> Run:
    """Run ``alcli CLI_ARGS`` to its end, to ``kill``, or to ``timeout_s`` (then: hung)."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    forwarded_file, stored_file = run_dir / "forwarded", run_dir / "stored"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(run_dir), *cli_args]
    run = Run(cli_args)
    peak_kib = 0
    with (run_dir / "stdout").open("wb") as out, (run_dir / "stderr").open("wb") as err:
        start = time.monotonic()
        process = subprocess.Popen(
            command, stdout=out, stderr=err, cwd=work, start_new_session=True
        )
        trigger_at: float | None = None  # when the kill's condition was met
        status = 0
        while True:
            peak_kib = max(peak_kib, peak_rss_kib(process.pid))  # read right before any kill
            pid, status = os.waitpid(process.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic() - start
            forwarded = read_size(forwarded_file)
            if kill is not None and not run.killed:
                if trigger_at is None and (
                    (kill.moment == END and forwarded >= remaining)
                    or (kill.moment == PROGRESS and forwarded_before + forwarded >= kill.at)
                ):
                    trigger_at = now
                due = (kill.moment == START and now >= kill.at) or (
                    trigger_at is not None and now >= trigger_at + kill.delay
                )
                if due:
                    os.kill(process.pid, signal.SIGKILL)
                    run.killed = True
                    run.kill = {"moment": kill.moment, "after_s": round(now, 3)}
                    if kill.moment != START:
                        run.kill["forwarded_in_run"] = forwarded
            if now > timeout_s and not run.killed:
                os.kill(process.pid, signal.SIGKILL)
                run.hung = True
                run.killed = True
            time.sleep(POLL_S)
        process.returncode = os.waitstatus_to_exitcode(status)
    run.seconds = round(time.monotonic() - start, 3)
    run.exit_code = process.returncode
    if (run_dir / "peak_kib").exists():
        peak_kib = max(peak_kib, int((run_dir / "peak_kib").read_text()))
    run.peak_rss_mib = round(peak_kib / 1024, 1)
    run.forwarded, run.stored = read_size(forwarded_file), read_size(stored_file)
    stdout = (run_dir / "stdout").read_text(errors="replace")
    run.stderr_tail = (run_dir / "stderr").read_text(errors="replace")[-2000:]
    if process.returncode == 0 and stdout.strip():
        run.summary = json.loads(stdout)
    shutil.rmtree(run_dir)
    return run


def tmp_files(cache_dir: Path) -> int:
    """Temporary files a store or compaction left in the segment folders."""
    segments = cache_dir / "embeddings" / "segments"
    return sum(1 for _ in segments.glob("*/.tmp*")) if segments.is_dir() else 0


def segment_files(cache_dir: Path) -> int:
    segments = cache_dir / "embeddings" / "segments"
    return sum(1 for _ in segments.glob("*/*.seg")) if segments.is_dir() else 0


# --------------------------------------------------------------------------- the soak


def kill_plan(kills: int, good: int, rng: np.random.Generator) -> list[Kill]:
    """Seeded moments: one at start, the middle ones by progress (plus up to 0.3 s, so a kill
    does not always land right after a forward pass), the last after the last forward pass
    (fewer kinds when there are fewer kills)."""
    middle = max(kills - 2, 0) if kills >= 3 else max(kills - 1, 0)
    fractions = np.sort(rng.uniform(0.05, 0.95, size=middle))
    delays = rng.uniform(0.0, 0.3, size=middle)
    plan = [
        Kill(PROGRESS, math.ceil(f * good), float(d))
        for f, d in zip(fractions, delays, strict=True)
    ]
    if kills >= 3:
        plan.insert(0, Kill(START, float(rng.uniform(0.2, 3.0))))
    if kills >= 2:
        plan.append(Kill(END, 0.0, float(rng.uniform(0.0, 0.2))))
    return plan


@dataclass
class Soak:
    """Everything measured on one pool."""

    items: int
    bad_items: int
    runs: list[Run] = field(default_factory=list)
    final: Run | None = None
    warm: Run | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def soak(
    pool: SoakPool,
    spec: str,
    cache_dir: Path,
    cli_options: list[str],
    work: Path,
    *,
    kills: int,
    rng: np.random.Generator,
    timeout_s: float,
) -> Soak:
    """Kill-and-resume ``kills`` times, run to completion, then once more warm."""
    args = ["embed", spec, *cli_options, "--cache-dir", str(cache_dir), "--json"]
    good = len(pool.good)
    result = Soak(items=len(pool.uris), bad_items=len(pool.bad))
    forwarded = stored = 0
    started = time.monotonic()
    for number, kill in enumerate(kill_plan(kills, good, rng), start=1):
        run = run_cli(
            args,
            work,
            kill=kill,
            forwarded_before=forwarded,
            remaining=good - stored,
            timeout_s=timeout_s,
        )
        run.tmp_files_after = tmp_files(cache_dir)
        forwarded += run.forwarded
        stored += run.stored
        result.runs.append(run)
        log(f"  run {number}: {describe(run)}")
        if not run.killed or run.hung:
            break  # it finished (the kill came too late) or failed: nothing left to kill
    result.seconds["killed_runs_s"] = round(time.monotonic() - started, 3)
    last = result.runs[-1] if result.runs else None
    if last is None or (last.killed and not last.hung):
        result.final = run_cli(args, work, timeout_s=timeout_s)
        log(f"  final: {describe(result.final)}")
    else:  # it ended before its planned kill: finished, failed or hung
        result.final = result.runs.pop()
    result.seconds["final_run_s"] = result.final.seconds
    if result.final.exit_code == 0:
        result.warm = run_cli(args, work, timeout_s=timeout_s)
        result.seconds["warm_run_s"] = result.warm.seconds
        log(f"  warm: {describe(result.warm)}")
    return result


def describe(run: Run) -> str:
    what = "hung, killed" if run.hung else "killed" if run.killed else f"exit {run.exit_code}"
    moment = f" ({run.kill['moment']} at {run.kill['after_s']} s)" if run.kill else ""
    return (
        f"{what}{moment} after {run.seconds:.1f} s, {run.forwarded:,} rows through the model, "
        f"{run.stored:,} stored, peak RSS {run.peak_rss_mib:,.0f} MiB"
    )


def failure(run: Run | None, *, number: int) -> str:
    """Why run ``number`` (1-based, over all runs) gave no summary, in one line."""
    if run is None:
        return "no run"
    if run.hung:
        return f"run {number} hung: no exit after {run.seconds:.0f} s"
    last = run.stderr_tail.strip().splitlines()[-1:] or ["(nothing on stderr)"]
    return f"run {number} exited {run.exit_code}: {last[0]}"


def check(result: Soak, pool: SoakPool, cache_dir: Path, batch_size: int) -> dict[str, Any]:
    """items_lost, items_recomputed and the skipped reasons, from the runs and the warm run."""
    good = len(pool.good)
    runs = [*result.runs, result.final] if result.final else list(result.runs)
    forwarded = sum(run.forwarded for run in runs)
    kills = sum(1 for run in result.runs if run.killed and not run.hung)
    report: dict[str, Any] = {
        "kills": kills,
        "items_recomputed": forwarded - good if result.warm else None,
        "recomputed_per_kill": [run.forwarded - run.stored for run in result.runs],
        "max_recomputed_per_kill": max(
            (run.forwarded - run.stored for run in result.runs), default=0
        ),
        "batch_size": batch_size,
        "tmp_files_after_kills": [run.tmp_files_after for run in result.runs],
        "leftover_tmp_files": tmp_files(cache_dir),
        "segments_at_end": segment_files(cache_dir),
    }
    recomputed = report["items_recomputed"]
    report["recomputed_within_one_batch_per_kill"] = (
        recomputed is not None and recomputed <= batch_size * kills
    )
    warm = result.warm.summary if result.warm and result.warm.summary else None
    if warm is None:
        report["items_lost"] = None
        report["error"] = failure(result.final, number=len(runs))
        return report
    reasons = {failure["uri"]: failure["reason"] for failure in warm["failures"]}
    unreported = [uri for uri in pool.bad if uri not in reasons]
    good_failed = [uri for uri in reasons if uri not in pool.bad]
    report["items_lost"] = (good - warm["cached"]) + len(unreported)
    report["good_items_not_cached"] = good - warm["cached"]
    report["bad_items_not_reported"] = unreported[:10]
    report["good_items_reported_bad"] = good_failed[:10]
    report["warm_embedded"] = warm["embedded"]
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for uri, kind in pool.bad.items():
        by_kind[kind][reasons.get(uri, "NOT REPORTED")] += 1
    report["skipped_reasons"] = {kind: dict(count) for kind, count in sorted(by_kind.items())}
    return report


def compare_with_uninterrupted(
    pool: SoakPool,
    spec_of: Callable[[list[str]], str],
    soak_cache: Path,
    fingerprint: str,
    cli_options: list[str],
    work: Path,
    *,
    compare_n: int,
    storage_options: dict[str, Any] | None,
    timeout_s: float,
) -> dict[str, Any]:
    """Embed ``compare_n`` good items, evenly spread, uninterrupted into a fresh cache, and
    compare both caches' rows for them byte for byte."""
    from alcli.cache import EmbeddingCache
    from alcli.sources import resolve_pool

    good = pool.good
    step = max(1, math.ceil(len(good) / compare_n))
    subset = good[::step]
    spec = spec_of(subset)
    reference_cache = work / "reference-cache"
    shutil.rmtree(reference_cache, ignore_errors=True)
    args = ["embed", spec, *cli_options, "--cache-dir", str(reference_cache), "--json"]
    reference = run_cli(args, work, timeout_s=timeout_s)
    log(f"  reference: {describe(reference)}")
    out: dict[str, Any] = {
        "compared_items": len(subset),
        "reference_run_s": reference.seconds,
        "reference_peak_rss_mib": reference.peak_rss_mib,
    }
    if reference.summary is None or reference.summary["fingerprint"] != fingerprint:
        out["identical"] = False
        out["error"] = reference.stderr_tail.strip().splitlines()[-1:] or "different fingerprint"
        return out
    keys = [item.key for item in resolve_pool(spec, storage_options=storage_options).items]
    with EmbeddingCache(soak_cache) as ours, EmbeddingCache(reference_cache) as theirs:
        soaked, soaked_found = ours.lookup(fingerprint, keys)
        straight, straight_found = theirs.lookup(fingerprint, keys)
        out["found"] = [int(soaked_found.sum()), int(straight_found.sum())]
        out["identical"] = bool(
            soaked_found.all()
            and straight_found.all()
            and np.ascontiguousarray(soaked).tobytes() == np.ascontiguousarray(straight).tobytes()
        )
        if not out["identical"] and soaked.shape == straight.shape:
            out["max_abs_difference"] = float(np.abs(soaked - straight).max())
    return out


# --------------------------------------------------------------------------- S3


@contextmanager
def s3_pool(
    pool: SoakPool, rng: np.random.Generator, hang_limit_s: float
) -> Iterator[dict[str, Any]]:
    """Upload the pool to a moto server, delete the 'deleted' objects, hang one when the
    fault proxy exists. Yields the endpoint, the s3:// URIs by local path, and what hangs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from embed_throughput import BUCKET, s3_environment, s3_server_process, upload

    s3_environment()
    with ExitStack() as stack:
        endpoint, _ = stack.enter_context(s3_server_process(0.0))
        started = time.monotonic()
        upload([path for path in pool.files if path.exists()], endpoint, S3_PREFIX)
        uri_of = {str(p): f"s3://{BUCKET}/{S3_PREFIX}/{p.name}" for p in pool.files}
        deleted = [uri for uri, kind in pool.bad.items() if kind == "deleted"]
        _delete(endpoint, BUCKET, [uri_of[uri].split("/", 3)[3] for uri in deleted])
        info: dict[str, Any] = {"upload_s": round(time.monotonic() - started, 3)}
        hang = _hanging_endpoint(stack, endpoint, pool, uri_of, rng, hang_limit_s)
        info.update(hang)
        info["uri_of"] = uri_of
        yield info


def _delete(endpoint: str, bucket: str, keys: list[str]) -> None:
    """Upload what a deleted object was, then delete it: a key a listing once had."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"soon gone")
        client.delete_object(Bucket=bucket, Key=key)


def _hanging_endpoint(
    stack: ExitStack,
    endpoint: str,
    pool: SoakPool,
    uri_of: dict[str, str],
    rng: np.random.Generator,
    hang_limit_s: float,
) -> dict[str, Any]:
    """The endpoint the CLI talks to: tests/faultproxy.py in front of moto holding one
    object's GETs for ``hang_limit_s``, or moto itself when that module is not there."""
    try:
        from faultproxy import FaultProxy
    except ImportError:
        return {
            "endpoint": endpoint,
            "hanging_object": "skipped: tests/faultproxy.py is not importable (branch i11-s3)",
        }
    victim = str(rng.choice(pool.good))
    key = uri_of[victim].split("/", 3)[3]
    proxy = stack.enter_context(FaultProxy(endpoint, hang_keys={key}, hang_limit_s=hang_limit_s))
    pool.bad[victim] = HANG_KIND
    return {"endpoint": proxy.url, "hanging_object": uri_of[victim], "proxy": proxy}


# --------------------------------------------------------------------------- main


def soak_one(args: argparse.Namespace, n: int, work: Path, *, compare: bool) -> dict[str, Any]:
    """Generate the pool of size ``n``, soak it, check it; the report for that pool."""
    rng = np.random.default_rng(args.seed)
    default_kinds = S3_KINDS if args.s3 else LOCAL_KINDS
    kinds = tuple(args.bad_kinds.split(",")) if args.bad_kinds else default_kinds
    unknown = set(kinds) - set(LOCAL_KINDS) - set(S3_KINDS)
    if unknown:
        raise SystemExit(f"unknown bad kinds {sorted(unknown)}; known: {LOCAL_KINDS + S3_KINDS}")
    phase: dict[str, float] = {}
    started = time.monotonic()
    log(f"pool of {n:,} items under {work / f'pool-{n}'}")
    pool = make_pool(work / f"pool-{n}", n, args.bad_fraction, kinds, args.seed)
    phase["generate_s"] = round(time.monotonic() - started, 3)
    cli_options = [
        "--model", args.model, "--weights", args.weights, "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size), *shlex.split(args.embed_args),
    ]  # fmt: skip
    cache_dir = work / f"cache-{n}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    timeout_s = args.run_timeout or max(600.0, n / 20)
    with ExitStack() as stack:
        storage_options = None
        spec_of: Callable[[list[str]], str]
        extra: dict[str, Any] = {}
        proxy: Any = None
        if args.s3:
            from alcli.sources import s3_options

            # the hanging object hangs all soak long: every run may ask for it again
            s3 = stack.enter_context(s3_pool(pool, rng, timeout_s * (args.kills + 4)))
            proxy = s3.pop("proxy", None)
            phase["upload_s"] = s3.pop("upload_s")
            uri_of = s3.pop("uri_of")
            cli_options += ["--endpoint-url", s3["endpoint"]]
            storage_options = s3_options(endpoint_url=s3["endpoint"])
            extra = {"s3": {k: v for k, v in s3.items() if k != "endpoint"}}
            pool = SoakPool(pool.manifest, [uri_of[u] for u in pool.uris],
                            {uri_of[u]: k for u, k in pool.bad.items()}, pool.files)  # fmt: skip

            def spec_of(uris: list[str]) -> str:
                return str(write_manifest(work / f"subset-{n}.txt", uris))

            spec = str(write_manifest(work / f"pool-{n}-s3.txt", pool.uris))
        else:

            def spec_of(uris: list[str]) -> str:
                return str(write_manifest(work / f"subset-{n}.txt", uris))

            spec = str(pool.manifest)
        log(f"soaking {n:,} items ({len(pool.bad):,} bad), {args.kills} kills")
        result = soak(
            pool, spec, cache_dir, cli_options, work, kills=args.kills, rng=rng, timeout_s=timeout_s
        )
        phase.update(result.seconds)
        report: dict[str, Any] = {
            "items": result.items,
            "bad_items": result.bad_items,
            "bad_kinds": sorted(collections.Counter(pool.bad.values()).items()),
            **check(result, pool, cache_dir, args.batch_size),
        }
        runs = [*result.runs, *(r for r in (result.final, result.warm) if r is not None)]
        report["peak_rss_mib"] = max((run.peak_rss_mib for run in runs), default=None)
        report["peak_rss_mib_per_run"] = [run.peak_rss_mib for run in runs]
        report["runs"] = [run.brief() for run in result.runs]
        report["final_run"] = result.final.brief() if result.final else None
        report["warm_run"] = result.warm.brief() if result.warm else None
        final = result.final.summary if result.final else None
        if final is not None:
            report["dim"] = final["dim"]
            report["embeddings_matrix_mib"] = round(len(pool.good) * final["dim"] * 4 / 2**20, 1)
        if compare and final is not None and args.compare_n > 0:
            compare_started = time.monotonic()
            report["compare"] = compare_with_uninterrupted(
                pool,
                spec_of,
                cache_dir,
                final["fingerprint"],
                cli_options,
                work,
                compare_n=args.compare_n,
                storage_options=storage_options,
                timeout_s=timeout_s,
            )
            phase["compare_s"] = round(time.monotonic() - compare_started, 3)
        if proxy is not None:  # how many times a run asked for the hanging object
            extra["s3"]["hung_gets"] = len(proxy.hung)
        report.update(extra)
    phase["total_s"] = round(time.monotonic() - started, 3)
    report["seconds"] = phase
    if not args.keep_cache:
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(work / "reference-cache", ignore_errors=True)
    return report


def verdict(report: dict[str, Any]) -> bool:
    """Nothing lost, little recomputed, the same bytes as an uninterrupted run."""
    return bool(
        report.get("items_lost") == 0
        and report.get("recomputed_within_one_batch_per_kill")
        and report.get("compare", {"identical": True}).get("identical")
    )


def overall(report: dict[str, Any]) -> bool:
    """``verdict`` on both pools, and a peak RSS flat in the pool size."""
    small = report.get("rss_comparison", {"flat": True, "small_pool_ok": True})
    return bool(report["ok_nothing_lost"] and small["flat"] and small["small_pool_ok"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="pool size (default 200,000)")
    parser.add_argument(
        "--rss-n", type=int, default=20_000, help="also soak a pool this size for RSS (0: don't)"
    )
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--bad-kinds", default="", help="comma list (default: all of the variant)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="", help="work folder (default: a temporary one)")
    parser.add_argument("--keep-cache", action="store_true", help="keep the caches in --work")
    parser.add_argument("--s3", action="store_true", help="serve the pool from moto S3")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIDE)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--embed-args", default="", help="more options for alcli embed, e.g. '--item-timeout 10'"
    )
    parser.add_argument(
        "--compare-n", type=int, default=20_000, help="good items compared with a straight run"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=0.0, help="seconds to a hung run (max(600, n/20))"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with ExitStack() as stack:
        if args.work:
            work = Path(args.work).resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alcli-soak-")))
        started = time.monotonic()
        load_before = list(os.getloadavg())
        small = None
        if args.rss_n and args.rss_n != args.n:  # first: it is the cheaper one to see fail
            small = soak_one(args, args.rss_n, work, compare=False)
        report = soak_one(args, args.n, work, compare=True)
        report["variant"] = "s3" if args.s3 else "local"
        report["model"] = f"{args.model} weights={args.weights} image_size={args.image_size}"
        report["ok_nothing_lost"] = verdict(report)
        if small is not None and small["peak_rss_mib"] and report["peak_rss_mib"]:
            sizes = sorted([(args.rss_n, small), (args.n, report)], key=lambda pair: pair[0])
            (n_small, a), (n_large, b) = sizes
            report["rss_comparison"] = {
                "n": [n_small, n_large],
                "peak_rss_mib": [a["peak_rss_mib"], b["peak_rss_mib"]],
                "embeddings_matrix_mib": [
                    a.get("embeddings_matrix_mib"),
                    b.get("embeddings_matrix_mib"),
                ],
                "growth_mib": round(b["peak_rss_mib"] - a["peak_rss_mib"], 1),
                "flat": b["peak_rss_mib"] <= 1.1 * a["peak_rss_mib"],
                "small_pool_ok": verdict(small),
                "small_pool": {k: small[k] for k in SMALL_KEYS if k in small},
            }
        report["ok"] = overall(report)
        report["machine"] = {
            "cores": os.cpu_count(),
            "load_before": load_before,
            "load_after": list(os.getloadavg()),
        }
        report["seconds_all"] = round(time.monotonic() - started, 3)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)


SMALL_KEYS = (
    "items", "bad_items", "kills", "items_lost", "items_recomputed", "recomputed_per_kill",
    "peak_rss_mib", "peak_rss_mib_per_run", "leftover_tmp_files", "seconds",
)  # fmt: skip


def print_table(report: dict[str, Any]) -> None:
    for key in (
        "variant", "model", "items", "bad_items", "kills", "items_lost", "items_recomputed",
        "recomputed_per_kill", "peak_rss_mib", "peak_rss_mib_per_run", "leftover_tmp_files",
        "compare", "rss_comparison", "seconds", "ok_nothing_lost", "ok",
    ):  # fmt: skip
        if key in report:
            value = report[key]
            if key == "rss_comparison":
                value = {k: v for k, v in value.items() if k != "small_pool"}
            print(f"{key:24} {json.dumps(value)}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(Path(sys.argv[2]), sys.argv[3:])
    else:
        main()
