"""``python -m letta_nb.bench retrieval``: does archival search find the turns that answer a question?

A long conversation with known answers (bench/_conversation.py: ~5,700 turns, 300 paraphrased questions
and 100 two-turn multi-hop ones; ``--quick``: ~250 turns) is stored as archival passages, one per turn, with
one batched ``passages.create``; every question is asked in each search mode (``text``, ``vector``,
``hybrid``) for the ``hash`` embedder and, where the ``local`` extra is installed, all-MiniLM-L6-v2.
Reported per embedder and mode: recall@5/10/25 (the share of a question's answer turns in the top k,
averaged), recall@10 of the multi-hop questions alone, MRR (1 / rank of the first answer turn), and search
latency p50 through the public API. Then inserts per second, one ``passages.create`` at a time against one
call with a list, in the same run (with ``local`` when installed: the embedder whose model calls dominate).
The default ``search_mode`` (runtime/search.py) is the one this bench finds best for both embedders.
Which runtime ran the local model, with how many threads and what batch size, is in the result
(``local_runtime``, ``local_torch_threads``, ``local_batch_size``) and its notes.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from letta_nb.bench._conversation import Conversation, build
from letta_nb.bench._report import BenchResult, percentile

__all__ = ["run", "MODES", "KS"]

MODES = ("text", "vector", "hybrid")
KS = (5, 10, 25)


def _scores(conv: Conversation, ranked: list[list[int]]) -> dict[str, float]:
    """recall@k (all questions, and multi-hop alone at 10) and MRR of ranked turn indexes per question."""
    out: dict[str, float] = {}
    for k in KS:
        out[f"recall_at_{k}"] = float(np.mean([len(q.relevant & set(r[:k])) / len(q.relevant)
                                               for q, r in zip(conv.questions, ranked, strict=True)]))
    multi = [(q, r) for q, r in zip(conv.questions, ranked, strict=True) if q.kind == "multi"]
    out["multi_recall_at_10"] = float(np.mean([len(q.relevant & set(r[:10])) / len(q.relevant) for q, r in multi]))
    out["mrr"] = float(np.mean([next((1 / (i + 1) for i, t in enumerate(r) if t in q.relevant), 0.0)
                                for q, r in zip(conv.questions, ranked, strict=True)]))
    return out


def _quality(client: Any, conv: Conversation, embedding: str) -> dict[str, float]:
    name = f"retrieval-{embedding}"
    client.agents.create(name=f"warm-{embedding}", model="offline", embedding=embedding)
    client.agents.passages.create(f"warm-{embedding}", "load the model before timing")
    client.agents.create(name=name, model="offline", embedding=embedding)
    t0 = time.perf_counter()
    passages = client.agents.passages.create(name, conv.turns)
    load_s = time.perf_counter() - t0
    turn_of = {p.id: i for i, p in enumerate(passages)}
    out = {f"{embedding}_load_passages_per_s": len(conv.turns) / load_s}
    for mode in MODES:
        client.agents.passages.search(name, conv.questions[0].text, top_k=25, search_mode=mode)  # warm
        ranked, latencies = [], []
        for q in conv.questions:
            t0 = time.perf_counter()
            hits = client.agents.passages.search(name, q.text, top_k=25, search_mode=mode)
            latencies.append((time.perf_counter() - t0) * 1000)
            ranked.append([turn_of[h.id] for h in hits])
        out |= {f"{embedding}_{mode}_{key}": value for key, value in _scores(conv, ranked).items()}
        out[f"{embedding}_{mode}_search_p50_ms"] = percentile(latencies, 50)
    return out


def _insert_rates(client: Any, embedding: str, singles: int, batch: int) -> dict[str, Any]:
    """Passages a second: ``singles`` one ``create`` each, then ``batch`` texts in one ``create``."""
    client.agents.create(name="inserts", model="offline", embedding=embedding)
    client.agents.passages.create("inserts", "warm up the model")
    texts = [f"Inserted note {i}: the shipment of item {i * 7 % 1000} arrives on day {i % 28 + 1}."
             for i in range(singles + batch)]
    t0 = time.perf_counter()
    for text in texts[:singles]:
        client.agents.passages.create("inserts", text)
    one_by_one = singles / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    client.agents.passages.create("inserts", texts[singles:])
    batched = batch / (time.perf_counter() - t0)
    out = {"insert_embedder": embedding, "inserts_one_by_one_per_s": one_by_one, "inserts_batched_per_s": batched,
           "batched_ratio": batched / one_by_one, "inserts_batch_size": batch}
    if embedding == "local":  # a big batch may run on every core of an idle host (embeddings/local.py)
        from letta_nb.embeddings.local import runtime_info

        out["inserts_batched_threads"] = runtime_info()["last_call_threads"]
    return out


def run(quick: bool = False) -> BenchResult:
    import letta_nb
    from letta_nb.embeddings.local import local_available

    conv = build(6, 3) if quick else build(50, 9)
    embedders = ["hash"] + (["local"] if local_available() else [])
    numbers: dict[str, Any] = {"turns": len(conv.turns), "questions": len(conv.questions),
                               "multi_hop_questions": sum(q.kind == "multi" for q in conv.questions)}
    with tempfile.TemporaryDirectory(prefix="letta_nb_bench_") as tmp:
        client = letta_nb.connect(os.path.join(tmp, "retrieval.db"))
        try:
            for embedding in embedders:
                numbers |= _quality(client, conv, embedding)
            numbers |= _insert_rates(client, embedders[-1], 20 if quick else 100, 200 if quick else 1000)
        finally:
            client.close()
    goals, notes = {}, []
    for embedding in embedders:
        hybrid, vector = numbers[f"{embedding}_hybrid_recall_at_10"], numbers[f"{embedding}_vector_recall_at_10"]
        goals[f"{embedding}: hybrid recall@10 > vector-only"] = hybrid > vector
        numbers[f"{embedding}_best_mode"] = max(MODES, key=lambda m: numbers[f"{embedding}_{m}_recall_at_10"])
    if "local" in embedders:
        from letta_nb.embeddings.local import runtime_info

        info = runtime_info()
        numbers |= {"local_runtime": info["runtime"], "local_torch_threads": info["torch_threads"],
                    "local_batch_size": info["batch_size"]}
        goals["local: batched inserts >= 5x one by one"] = numbers["batched_ratio"] >= 5
        notes.append(f"local: all-MiniLM-L6-v2 on sentence-transformers/{info['runtime']} (CPU, "
                     f"{info['torch_threads']} torch thread(s), batches of {info['batch_size']}), micro-batched; "
                     f"the batched insert ran on {numbers.get('inserts_batched_threads')} thread(s)")
    else:
        notes.append("no local numbers: pip install 'letta-nb[local]' for all-MiniLM-L6-v2")
    return BenchResult("retrieval", numbers, goals=goals, notes=notes)
