"""``python -m letta_nb.bench retrieval`` runs as a user would and reports recall per embedder and mode.

Speeds are not asserted (the machine is shared); what the bench computes is: the corpus is deterministic,
the scores are right on a hand-checked ranking, and with the deterministic ``hash`` embedder hybrid search
finds more answer turns than vector search alone.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from letta_nb.bench._conversation import NAMES, Conversation, Question, build
from letta_nb.bench.retrieval import KS, MODES, _scores


def test_the_conversation_is_deterministic_and_its_answers_are_where_it_says():
    conv = build(6, 2)
    assert conv == build(6, 2) and conv != build(6, 2, seed=1)
    assert len(conv.turns) == 6 * 6 * (2 * 2 + 1)  # six facts a person, each after 2 exchanges of filler
    single = [q for q in conv.questions if q.kind == "single"]
    assert len(single) == 36 and all(len(q.relevant) == 1 for q in single)
    for q in conv.questions:
        if q.kind == "single":
            name = next(n for n in NAMES if n in q.text)  # the answer turn is about the person the question names
            assert name in conv.turns[next(iter(q.relevant))], (q, name)
        else:
            assert len(q.relevant) == 2


def test_scores_on_a_known_ranking():
    conv = build(2, 1)
    perfect = [sorted(q.relevant) for q in conv.questions]
    assert _scores(conv, perfect) == {**{f"recall_at_{k}": 1.0 for k in KS}, "multi_recall_at_10": 1.0, "mrr": 1.0}
    nothing = [[] for _ in conv.questions]
    assert _scores(conv, nothing)["recall_at_25"] == 0.0 and _scores(conv, nothing)["mrr"] == 0.0
    second = [[-1, *sorted(q.relevant)] for q in conv.questions]  # each answer one place down
    assert _scores(conv, second)["mrr"] == pytest.approx(0.5)


def test_recall_at_k_and_mrr_on_hand_checked_rankings():
    conv = Conversation(turns=[f"t{i}" for i in range(40)], questions=[
        Question("a", frozenset({3}), "single"),       # answer at rank 7: recall@5 0, @10 1, MRR 1/7
        Question("b", frozenset({5}), "single"),       # answer at rank 1: everything 1
        Question("c", frozenset({8, 9}), "multi"),     # one answer at rank 2, the other at rank 20
        Question("d", frozenset({30}), "single"),      # never found
    ])
    filler = [i for i in range(10, 40) if i not in (30,)]  # turns that answer nothing
    ranked = [filler[:6] + [3] + filler[6:18],
              [5, *filler[:20]],
              [filler[0], 8, *filler[1:18], 9, *filler[18:24]],
              filler[:25]]
    assert [r.index(3) for r in ranked[:1]] == [6] and ranked[2].index(9) == 19  # ranks 7 and 20 (1-based)
    got = _scores(conv, ranked)
    assert got["recall_at_5"] == pytest.approx((0 + 1 + 0.5 + 0) / 4)
    assert got["recall_at_10"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert got["recall_at_25"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert got["multi_recall_at_10"] == pytest.approx(0.5)
    assert got["mrr"] == pytest.approx((1 / 7 + 1 + 1 / 2 + 0) / 4)


@pytest.mark.slow
def test_bench_retrieval_quick_json():
    proc = subprocess.run([sys.executable, "-m", "letta_nb.bench", "retrieval", "--quick", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["retrieval"]
    assert data["turns"] == 252 and data["questions"] == 54
    embedders = ["hash", "local"] if "local_hybrid_recall_at_10" in data else ["hash"]
    for embedding in embedders:
        for mode in MODES:
            recalls = [data[f"{embedding}_{mode}_recall_at_{k}"] for k in KS]
            assert 0 < recalls[0] <= recalls[1] <= recalls[2] <= 1  # deeper finds at least as much
            assert 0 < data[f"{embedding}_{mode}_mrr"] <= 1 and data[f"{embedding}_{mode}_search_p50_ms"] > 0
    # hash is deterministic: words matter more to it than its hashed vectors, and fusing helps.
    assert data["hash_hybrid_recall_at_10"] > data["hash_vector_recall_at_10"]
    assert data["goals"]["hash: hybrid recall@10 > vector-only"]
    if "local" in embedders:  # the bench says what ran the model
        assert data["local_runtime"] == "torch" and data["local_torch_threads"] >= 1
        assert data["local_batch_size"] == 32
    assert data["inserts_batched_per_s"] > 0 and data["batched_ratio"] == pytest.approx(
        data["inserts_batched_per_s"] / data["inserts_one_by_one_per_s"])
