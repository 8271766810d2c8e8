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
"""

from __future__ import annotations

import argparse
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
from embed_throughput import BUCKET, s3_environment, s3_server_process, upload  # noqa: E402

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


def plain_round(
    uris: list[str], storage: dict[str, Any] | None, **round_: Any
) -> tuple[float, np.ndarray]:
    """Read, decode, infer with a DataLoader, then the head and an argsort."""
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
    X = np.concatenate(rows)
    names = [u.rsplit("/", 1)[1] for u in uris]
    picks = head_and_picks(X, names, **round_)
    return time.perf_counter() - start, np.asarray(sorted(names[i] for i in picks))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    s3_environment()
    work = Path(tempfile.mkdtemp(prefix="alcli-table2-"))
    names = sorted(os.listdir(MNIST / "train"))[: args.n]
    if len(names) < args.n:
        raise SystemExit(f"{MNIST / 'train'} has {len(names)} PNGs; see examples/mnist_pool.py")
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
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    seconds: dict[str, float] = {}
    picks: dict[str, np.ndarray] = {}
    try:
        with s3_server_process(args.delay_ms) as (endpoint, _pid):
            log(f"uploading {args.n} PNGs to the moto server ({args.delay_ms:g} ms per request)")
            upload([pool / name for name in names], endpoint, "mnist")
            storage = s3_options(endpoint_url=endpoint)
            spec_s3 = f"s3://{BUCKET}/mnist/"
            uris_s3 = [f"s3://{BUCKET}/mnist/{name}" for name in names]
            uris_local = [str(pool / name) for name in names]
            # Warm-up: torch and the model's code paths, outside every timing.
            embed(str(pool), options=EmbedOptions(**base), cache=work / "warm")
            for where, spec, uris, store in (
                ("local", str(pool), uris_local, None),
                ("s3", spec_s3, uris_s3, storage),
            ):
                for method in ("plain", "alcli_threads", "alcli_ray"):
                    if method == "plain":
                        took, chosen = plain_round(uris, store, **round_)
                    else:
                        options = threads if method == "alcli_threads" else on_ray
                        took, chosen = alcli_round(spec, options, work / "cache", store, **round_)
                    seconds[f"{method}_{where}_s"] = round(took, 2)
                    picks[f"{method}_{where}"] = chosen
                    log(f"{where} {method}: {took:.1f} s ({args.n / took:.0f} images/s)")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    def agree(a: str, b: str) -> float:
        return round(len(np.intersect1d(picks[a], picks[b])) / max(1, len(picks[a])), 3)

    return {
        "n": args.n,
        "labels": args.labels,
        "picks": round_["picks"],
        "model": f"{MODEL} weights none @{IMAGE_SIZE}px",
        "delay_ms": args.delay_ms,
        "cores": os.cpu_count(),
        **seconds,
        "speedup_local": round(seconds["plain_local_s"] / seconds["alcli_threads_local_s"], 2),
        "speedup_s3": round(seconds["plain_s3_s"] / seconds["alcli_threads_s3_s"], 2),
        "speedup_local_ray": round(seconds["plain_local_s"] / seconds["alcli_ray_local_s"], 2),
        "speedup_s3_ray": round(seconds["plain_s3_s"] / seconds["alcli_ray_s3_s"], 2),
        "picks_agree_threads_ray_local": agree("alcli_threads_local", "alcli_ray_local"),
        "picks_agree_threads_plain_local": agree("alcli_threads_local", "plain_local"),
        "picks_agree_local_s3": agree("alcli_threads_local", "alcli_threads_s3"),
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000, help="pool size (MNIST PNGs)")
    parser.add_argument("--labels", type=int, default=1_000)
    parser.add_argument("--picks", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f"{key:>32}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
