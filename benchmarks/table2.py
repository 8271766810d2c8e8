"""The paper's Table 2 on this machine: one active-learning round, alcli vs a plain loop.

One round: embed an N-image MNIST pool cold (default 40,000; benchmarks/.work/mnist/train),
train a head on --labels labelled items, and pick --picks items by least confidence. Model:
ResNet-18 ``--weights none`` at 32 px (random but seeded init: the same numbers everywhere).
Each method runs on local files and on the moto S3 server (tests/s3server.py in its own
process) with --delay-ms injected per request:

- ``alcli_threads``: ``alcli.embedding.embed`` (threads engine, cold cache), then
  ``alcli.learner.train_head`` and ``alcli.strategies.run("least_confidence")``.
- ``alcli_ray``: the same with ``engine="ray"`` on a local Ray (started once, untimed).
- ``plain``: how DeepAL/modAL-style tools do it: a ``torch.utils.data.DataLoader``
  (``num_workers=0``, batch 64) over a Dataset that reads each file (``open`` / s3fs), decodes
  with PIL and applies torchvision's transform, the model on each batch, then the same head
  and an ``argsort`` of the least-confidence scores.

``speedup_local`` / ``speedup_s3``: plain seconds / alcli threads seconds (targets >= 1.2 and
>= 2.0); ``speedup_*_ray`` the same for the Ray engine. The picks of the three methods are
compared (``picks_agree``: the share of alcli's picks the plain loop also picks).

    .venv/bin/python benchmarks/table2.py --json

The S3 objects are preloaded into the moto server's backend as it starts (setup, untimed).
Parts that fit one lock hold each, then one report (the plain S3 loop split in slices)::

    table2.py --json --methods alcli_threads,alcli_ray --where local --picks-out a.npz > a.json
    table2.py --json --methods plain --where s3 --slice 0:20000 --features-out f0 > s0.json
    table2.py --merge a.json s0.json ... --merge-picks a.npz ... --merge-features f0_s3.npy ...
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "benchmarks" / ".work" / "mnist"
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcli.embedding import EmbedOptions, embed  # noqa: E402
from alcli.sources import s3_options  # noqa: E402
from embed_throughput import BUCKET, s3_environment, s3_server_process  # noqa: E402

MODEL, IMAGE_SIZE, BATCH = "resnet18", 32, 64


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def labels_by_name() -> dict[str, str]:
    with open(MNIST / "train_labels.csv", encoding="utf-8") as handle:
        return {Path(row["uri"]).name: row["label"] for row in csv.DictReader(handle)}


def head_and_picks(
    X: np.ndarray, names: list[str], labels: dict[str, str], n_labels: int, picks: int
) -> np.ndarray:
    """Train the head on the first ``n_labels`` rows of a seeded order; the least-confidence
    picks among the rest (positions in ``names``)."""
    from alcli.learner import train_head

    order = np.random.default_rng(0).permutation(len(names))
    labeled = np.sort(order[:n_labels])
    head = train_head(X[labeled], [labels[names[i]] for i in labeled], seed=0)
    probs = head.predict_proba(X)
    scores = 1.0 - probs.max(axis=1)
    scores[labeled] = -np.inf  # never pick what is labelled
    return np.argsort(-scores, kind="stable")[:picks]


def alcli_round(
    spec: str, options: EmbedOptions, cache: Path, storage: dict[str, Any] | None, **round_: Any
) -> tuple[float, np.ndarray]:
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    result = embed(spec, options=options, cache=cache, storage_options=storage)
    names = [item.uri.rsplit("/", 1)[1] for item in result.items]
    picks = head_and_picks(result.embeddings, names, **round_)
    seconds = time.perf_counter() - start
    if result.failures:
        raise RuntimeError(f"{len(result.failures)} items failed: {result.failures[0]}")
    return seconds, np.asarray(sorted(names[i] for i in picks))


def plain_features(uris: list[str], storage: dict[str, Any] | None) -> tuple[float, np.ndarray]:
    """Read, decode, infer with a DataLoader: the plain loop's features and their seconds."""
    import torch
    import torchvision
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    start = time.perf_counter()
    fs = None
    if storage is not None:
        import fsspec

        fs = fsspec.filesystem("s3", **storage)
    transform = transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )

    class Images(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(uris)

        def __getitem__(self, i: int) -> torch.Tensor:
            if fs is None:
                with open(uris[i], "rb") as handle:
                    data = handle.read()
            else:
                data = fs.cat_file(uris[i])
            return transform(Image.open(io.BytesIO(data)).convert("RGB"))

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    with torch.inference_mode():
        loader = DataLoader(Images(), batch_size=BATCH, num_workers=0)
        rows = [model(batch).numpy() for batch in loader]
    return time.perf_counter() - start, np.concatenate(rows)


def plain_picks(X: np.ndarray, names: list[str], **round_: Any) -> tuple[float, np.ndarray]:
    """The plain loop's head and ``argsort``, and their seconds."""
    start = time.perf_counter()
    picks = head_and_picks(X, names, **round_)
    return time.perf_counter() - start, np.asarray(sorted(names[i] for i in picks))


def parse_slice(text: str | None, n: int) -> tuple[int, int]:
    if not text:
        return 0, n
    first, _, last = text.partition(":")
    return int(first or 0), min(n, int(last or n))


def run(args: argparse.Namespace) -> dict[str, Any]:
    s3_environment()
    methods = args.methods.split(",")
    places = args.where.split(",")
    work = Path(tempfile.mkdtemp(prefix="alcli-table2-"))
    names = sorted(os.listdir(MNIST / "train"))[: args.n]
    if len(names) < args.n:
        raise SystemExit(f"{MNIST / 'train'} has {len(names)} PNGs; see examples/mnist_pool.py")
    first, last = parse_slice(args.slice, args.n)
    if (first, last) != (0, args.n) and methods != ["plain"]:
        raise SystemExit("--slice splits the plain loop only: add --methods plain")
    pool = work / "pool"
    pool.mkdir()
    for name in names:
        os.symlink(MNIST / "train" / name, pool / name)
    round_ = {
        "labels": labels_by_name(),
        "n_labels": args.labels,
        "picks": min(args.picks, args.n - args.labels),
    }
    base = {"model": MODEL, "weights": "none", "image_size": IMAGE_SIZE, "batch_size": BATCH}
    threads, on_ray = EmbedOptions(**base), EmbedOptions(**base, engine="ray")
    report: dict[str, Any] = {
        "n": args.n,
        "labels": args.labels,
        "picks": round_["picks"],
        "model": f"{MODEL} weights none @{IMAGE_SIZE}px",
        "delay_ms": args.delay_ms,
        "cores": os.cpu_count(),
        "methods": methods,
        "where": places,
    }
    if (first, last) != (0, args.n):
        report["slice"] = [first, last]
    picks: dict[str, np.ndarray] = {}
    started_ray = False
    try:
        if "alcli_ray" in methods:
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            started_ray = True
            report["ray_init_s"] = round(time.perf_counter() - start, 2)
        with contextlib.ExitStack() as stack:
            storage = None
            if "s3" in places:
                # Setup, untimed: the PNGs go into moto's backend as the server starts (see
                # MotoS3Server.preload; PUTs through HTTP took > 15 min for 40,000).
                start = time.perf_counter()
                flags = ("--preload", str(pool), "--bucket", BUCKET, "--prefix", "mnist")
                endpoint, _pid = stack.enter_context(s3_server_process(args.delay_ms, *flags))
                report["s3_setup_s"] = round(time.perf_counter() - start, 2)
                log(f"moto S3 with {args.n} PNGs up in {report['s3_setup_s']} s")
                storage = s3_options(endpoint_url=endpoint)
            if set(methods) & {"alcli_threads", "alcli_ray"}:
                # Warm-up: torch and the model's code paths, outside every timing.
                warm = work / "warm"
                warm.mkdir()
                for name in names[:256]:
                    os.symlink(MNIST / "train" / name, warm / name)
                embed(str(warm), options=EmbedOptions(**base), cache=work / "warm-cache")
            for where in places:
                spec = str(pool) if where == "local" else f"s3://{BUCKET}/mnist/"
                uris = (
                    [str(pool / name) for name in names]
                    if where == "local"
                    else [f"s3://{BUCKET}/mnist/{name}" for name in names]
                )
                store = None if where == "local" else storage
                for method in methods:
                    if method == "plain":
                        took, X = plain_features(uris[first:last], store)
                        report[f"plain_{where}_features_s"] = round(took, 2)
                        if args.features_out:
                            np.save(f"{args.features_out}_{where}.npy", X)
                        if (first, last) != (0, args.n):
                            log(f"{where} plain [{first}:{last}]: features {took:.1f} s")
                            continue
                        head_s, chosen = plain_picks(X, names, **round_)
                        report[f"plain_{where}_head_s"] = round(head_s, 2)
                        took += head_s
                    else:
                        options = threads if method == "alcli_threads" else on_ray
                        took, chosen = alcli_round(spec, options, work / "cache", store, **round_)
                    report[f"{method}_{where}_s"] = round(took, 2)
                    picks[f"{method}_{where}"] = chosen
                    log(f"{where} {method}: {took:.1f} s ({len(uris) / took:.0f} images/s)")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    if args.picks_out and picks:
        np.savez(args.picks_out, **picks)
    report["load_average"] = os.getloadavg()
    return finish(report, picks)


def finish(report: dict[str, Any], picks: dict[str, np.ndarray]) -> dict[str, Any]:
    """The speedups and pick agreements that the seconds and picks at hand allow."""

    def agree(a: str, b: str) -> float:
        return round(len(np.intersect1d(picks[a], picks[b])) / max(1, len(picks[a])), 3)

    for where in ("local", "s3"):
        for method, key in (("alcli_threads", ""), ("alcli_ray", "_ray")):
            plain, ours = report.get(f"plain_{where}_s"), report.get(f"{method}_{where}_s")
            if plain and ours:
                report[f"speedup_{where}{key}"] = round(plain / ours, 2)
    for a, b, key in (
        ("alcli_threads_local", "alcli_ray_local", "threads_ray_local"),
        ("alcli_threads_s3", "alcli_ray_s3", "threads_ray_s3"),
        ("alcli_threads_local", "plain_local", "threads_plain_local"),
        ("alcli_threads_local", "alcli_threads_s3", "local_s3"),
    ):
        if a in picks and b in picks:
            report[f"picks_agree_{key}"] = agree(a, b)
    return report


def merge(parts: list[str], picks_files: list[str], features: list[str]) -> dict[str, Any]:
    """One report from parts run in separate lock holds (the same --n, labels and picks).

    ``features``: the plain loop's S3 features of consecutive ``--slice`` parts, in order;
    their head and ``argsort`` are timed here and added to the slices' seconds."""
    report: dict[str, Any] = {"parts": []}
    sliced_s = 0.0
    for path in parts:
        part = json.loads(Path(path).read_text())
        report["parts"].append({key: part.get(key) for key in ("methods", "where", "slice")})
        for key, value in part.items():
            if "slice" in part and key == "plain_s3_features_s":
                sliced_s += value
                report.setdefault("plain_s3_slices_s", []).append(value)
            elif key.endswith("_s") and "slice" not in part:
                report[key] = value
            elif key not in ("parts", "methods", "where", "slice", "load_average"):
                report.setdefault(key, value)
    picks: dict[str, np.ndarray] = {}
    for path in picks_files:
        with np.load(path) as saved:
            picks.update({key: saved[key] for key in saved.files})
    if features:
        names = sorted(os.listdir(MNIST / "train"))[: report["n"]]
        X = np.concatenate([np.load(path) for path in features])
        round_ = {
            "labels": labels_by_name(),
            "n_labels": report["labels"],
            "picks": report["picks"],
        }
        warm = 2 * report["labels"]
        plain_picks(X[:warm], names[:warm], **round_)  # imports, outside the timing
        head_s, picks["plain_s3"] = plain_picks(X, names, **round_)
        report["plain_s3_head_s"] = round(head_s, 2)
        report["plain_s3_s"] = round(sliced_s + head_s, 2)
    report["load_average"] = os.getloadavg()
    return finish(report, picks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000, help="pool size (MNIST PNGs)")
    parser.add_argument("--labels", type=int, default=1_000)
    parser.add_argument("--picks", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--methods", default="plain,alcli_threads,alcli_ray")
    parser.add_argument("--where", default="local,s3", help="local, s3 or both")
    parser.add_argument("--slice", help="START:STOP of the pool for the plain loop only")
    parser.add_argument("--picks-out", help="save each method's picks to this .npz")
    parser.add_argument("--features-out", help="save the plain loop's features (PREFIX_WHERE.npy)")
    parser.add_argument("--merge", nargs="+", metavar="PART_JSON", help="combine parts' reports")
    parser.add_argument("--merge-picks", nargs="*", default=[], metavar="NPZ")
    parser.add_argument("--merge-features", nargs="*", default=[], metavar="NPY")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    report = merge(args.merge, args.merge_picks, args.merge_features) if args.merge else run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f"{key:>32}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
