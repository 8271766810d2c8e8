"""How long the Label Studio formats take at scale: tasks out, exports back in.

Writes ``--tasks`` tasks (``label_studio_tasks`` + ``split_tasks`` + ``write_tasks``: the
``select --format label-studio`` path after the strategy) and reads back a JSON, a JSON_MIN
and a CSV export of ``--annotated`` tasks shaped as Label Studio 1.23.2 writes them (two
annotations on every tenth task, one cancelled task in twenty). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

from alcli.labels import label_studio_tasks, load_labels, split_tasks, write_tasks


def _export(n: int, root: str) -> tuple[list[dict], list[dict]]:
    full, minimal = [], []
    for i in range(n):
        uri = f"{root}/pool/{i:07d}.png"
        data = {"image": f"/data/local-files/?d=pool/{i:07d}.png", "uri": uri}
        annotations = []
        for a in range(2 if i % 10 == 0 else 1):
            stamp = f"2026-12-03T07:{a:02d}:00.000000Z"
            annotations.append(
                {
                    "id": 2 * i + a,
                    "completed_by": 1,
                    "was_cancelled": i % 20 == 1,
                    "ground_truth": False,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "lead_time": 1.5,
                    "result": [
                        {
                            "from_name": "choice",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [str((i + a) % 10)]},
                        }
                    ],
                }
            )
            if i % 20 != 1:
                minimal.append(
                    {
                        **data,
                        "id": i + 1,
                        "choice": str((i + a) % 10),
                        "annotator": 1,
                        "annotation_id": 2 * i + a,
                        "created_at": stamp,
                        "updated_at": stamp,
                        "lead_time": 1.5,
                    }
                )
        full.append({"id": i + 1, "data": data, "annotations": annotations, "predictions": []})
    return full, minimal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=300_000)
    parser.add_argument("--annotated", type=int, default=100_000)
    args = parser.parse_args()
    out: dict[str, object] = {"tasks": args.tasks, "annotated": args.annotated}
    with tempfile.TemporaryDirectory() as work:
        root = str(Path(work).resolve())
        uris = [f"{root}/pool/{i:07d}.png" for i in range(args.tasks)]
        started = time.perf_counter()
        tasks = label_studio_tasks(
            uris,
            root=root,
            scores=[i / args.tasks for i in range(args.tasks)],
            model_version="margin@mobilenet_v2/abc",
            predicted=[str(i % 10) for i in range(args.tasks)],
        )
        files = write_tasks(Path(work) / "tasks", split_tasks(tasks))
        out["write_tasks_s"] = round(time.perf_counter() - started, 3)
        out["task_files"] = len(files)
        out["task_mib"] = round(sum(f.stat().st_size for f in files) / 2**20, 1)

        full, minimal = _export(args.annotated, root)
        paths = {
            "json": Path(work) / "e.json",
            "json_min": Path(work) / "m.json",
            "csv": Path(work) / "e.csv",
        }
        paths["json"].write_text(json.dumps(full))
        paths["json_min"].write_text(json.dumps(minimal))
        with paths["csv"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted(minimal[0]))
            writer.writeheader()
            writer.writerows(minimal)
        for kind, path in paths.items():
            started = time.perf_counter()
            labels = load_labels(path, root=root)
            out[f"read_{kind}_s"] = round(time.perf_counter() - started, 3)
            out[f"read_{kind}_labels"] = len(labels)
            out[f"read_{kind}_mib"] = round(path.stat().st_size / 2**20, 1)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
