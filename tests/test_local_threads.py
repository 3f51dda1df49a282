"""A big batch of the ``local`` embedder uses every core of an idle host, and only then (embeddings/local.py).

The thread count is process-wide in torch, so the embedder widens it for one big call and puts it back. These
tests drive the decision with a fake model and a recorded ``set_num_threads``: they need neither torch nor the
model weights, so they run in CI too."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from letta_nb.embeddings import local


class _FakeModel:
    def __init__(self, threads: list[int]) -> None:
        self.seen: list[int] = []
        self._threads = threads

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        self.seen.append(self._threads[-1])  # the threads set while this call runs
        return np.ones((len(texts), 384), dtype=np.float32)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[_FakeModel, list[int]]:
    monkeypatch.setattr(local, "local_available", lambda: True)
    threads = [1]
    model = _FakeModel(threads)
    monkeypatch.setattr(local, "_load", lambda: model)
    monkeypatch.setattr(local, "_threads", 1)
    monkeypatch.setattr(local, "_last_threads", None)
    monkeypatch.setattr(local, "_set_torch_threads", threads.append)
    monkeypatch.setattr(local, "_cores", lambda: 2)
    monkeypatch.delenv("LETTA_NB_LOCAL_THREADS", raising=False)
    return model, threads


def test_a_big_batch_on_an_idle_host_uses_every_core_then_goes_back(fake, monkeypatch) -> None:
    model, threads = fake
    monkeypatch.setattr(local, "_idle_cores", lambda _s: 1.8)  # both cores free but a sliver
    local.LocalEmbedder()._encode(["note"] * local.WIDE_BATCH)
    assert model.seen == [2] and threads[-1] == 1  # widened for the call, narrowed after
    assert local.runtime_info()["last_call_threads"] == 2


def test_small_calls_and_busy_hosts_stay_on_the_models_threads(fake, monkeypatch) -> None:
    model, threads = fake
    monkeypatch.setattr(local, "_idle_cores", lambda _s: 2.0)
    local.LocalEmbedder()._encode(["note"] * (local.WIDE_BATCH - 1))  # not a big batch
    monkeypatch.setattr(local, "_idle_cores", lambda _s: 1.0)  # another process holds a core
    local.LocalEmbedder()._encode(["note"] * 500)
    assert model.seen == [1, 1] and threads == [1]  # never touched


def test_a_chosen_thread_count_is_never_overridden(fake, monkeypatch) -> None:
    model, threads = fake
    monkeypatch.setenv("LETTA_NB_LOCAL_THREADS", "1")
    monkeypatch.setattr(local, "_idle_cores", lambda _s: 2.0)
    local.LocalEmbedder()._encode(["note"] * 500)
    assert model.seen == [1] and threads == [1]


def test_idle_cores_reads_the_hosts_cpu_counters() -> None:
    idle = local._idle_cores(0.05)
    assert idle is not None and 0.0 <= idle <= (local.os.cpu_count() or 1) + 0.01
