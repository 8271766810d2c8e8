"""Building a backbone on its own thread, so the pipeline reads and decodes meanwhile."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import torch

from alcli.models.backbone import Backbone, load_backbone, resolve_device
from alcli.models.preprocessing import ImageTransform
from alcli.models.registry import DEFAULT_MODEL, resolve
from alcli.numerics import check_runtime_installed, resolve_numerics


class BackboneInBackground:
    """A backbone being built on its own thread, usable by the pipeline right away.

    Building mobilenet_v2 (weights read, BatchNorm folded, a probe forward) costs 0.16-0.26 s
    of one core (measured alone and inside ``alcli bench``), 3-5 % of a cold 1,000-image
    run. The transform needs none of it, so reads and decodes start at once and the build
    overlaps them; only ``embed`` (the first batch) waits for the network. Name and weights
    are checked here, before any thread, so a typo still fails at once with its
    ``ModelError``.

    ``start()`` begins the build. The build runs its many tiny ops on one torch thread, and
    torch's thread count is process-wide: start it only after whoever reads that count (the
    pipeline, to size its model thread) has read it.
    """

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        weights: str | os.PathLike[str] | None = None,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        *,
        precision: str = "fp32",
        runtime: str = "torch",
        export_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        _, params = resolve(name, weights, image_size)
        self.transform = ImageTransform(params)
        self.device = resolve_device(device)
        self.numerics = resolve_numerics(precision, runtime, str(self.device))
        check_runtime_installed(runtime)
        options = {
            "precision": precision,
            "runtime": runtime,
            "export_dir": export_dir,
            # the run's thread budget, read now: once the model streams start, each sets
            # torch's process-wide count to its share (1 of 2), and an OpenVINO model built
            # with that share ran on one core of two (the pipeline at 0.5 of its bound)
            "threads": torch.get_num_threads(),
        }
        self._done = threading.Event()
        self._starting = threading.Lock()
        self._started = False
        self.build_s = 0.0  # how long the build took
        self._built_at: float | None = None
        self._first_wait: float | None = None  # when a caller of result() first had to wait
        self._backbone: Backbone | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._build,
            args=(name, weights, image_size, self.device, options),
            name="alcli-build-model",
            daemon=True,  # a stopped run does not wait for a build nobody will use
        )

    def start(self) -> BackboneInBackground:
        """Begin building (once, whoever calls first); returns self."""
        with self._starting:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def _build(
        self,
        name: str,
        weights: str | os.PathLike[str] | None,
        image_size: int | None,
        device: torch.device,
        options: dict[str, Any],
    ) -> None:
        started = time.perf_counter()
        try:
            self._backbone = load_backbone(name, weights, image_size, device=device, **options)
        except BaseException as error:  # handed to whoever asks for the backbone
            self._error = error
        finally:
            self._built_at = time.perf_counter()
            self.build_s = self._built_at - started
            self._done.set()

    @property
    def waited_s(self) -> float:
        """Wall time from the first caller of result() that had to wait until the build ended
        (several model streams waiting at once count once)."""
        if self._first_wait is None or self._built_at is None:
            return 0.0
        return max(0.0, self._built_at - self._first_wait)

    def result(self) -> Backbone:
        """The built backbone (starts the build if needed, waits); re-raises what it raised."""
        self.start()
        if not self._done.is_set():
            with self._starting:
                if self._first_wait is None:
                    self._first_wait = time.perf_counter()
            self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._backbone is not None
        return self._backbone

    def failed(self) -> BaseException | None:
        """What the build raised, once it is over (None while it runs or when it worked)."""
        return self._error if self._done.is_set() else None

    def preprocess(self, data: bytes) -> torch.Tensor:
        """As ``Backbone.preprocess``; needs no network."""
        return self.transform(data)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """As ``Backbone.embed``, once the build is done."""
        return self.result().embed(batch)
