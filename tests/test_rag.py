"""gptbook.rag and gptbook.retrieval: the document store, BM25 equal to rank-bm25, the retrieval
metrics and fusion, exact and approximate search, the dense encoder, and the RAG-Sequence
marginalisation."""
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptbook.generate import generate
from gptbook.instruct import format_prompt
from gptbook.model import GPTConfig, GPTModel
from gptbook.rag import (QUESTION_TEMPLATES, answer_logprobs, build_store, cut_passages,
                         exact_match, greedy_answers, load_store, make_questions, marginalize,
                         passage_text, rag_example, rag_sequence_answers, save_store,
                         split_addresses)
from gptbook.retrieval import (BM25, DenseEncoder, IVFIndex, in_batch_loss, kmeans, mean_pool,
                               mean_reciprocal_rank, pad_batch, recall_at_k,
                               reciprocal_rank_fusion, top_k_exact, words)
from gptbook.tokenizer import gpt2_encoding

EOT = 50256

ADDRESSES = [
    {"name": "Ada Adams", "year": 1801, "text": "The harvest was good. We built roads and canals "
     "across the western lands. Trade with France grew. Our navy keeps the peace at sea."},
    {"name": "Ben Brown", "year": 1802, "text": "Peace holds. The debt fell by a third this year, "
     "and the mint struck new coins. Schools opened in every county of the new states."},
    {"name": "Ada Adams", "year": 1805, "text": "War came to the frontier. The militia answered "
     "the call. Congress must fund the army and the forts along the river."},
]


@pytest.fixture(scope="module")
def enc():
    return gpt2_encoding()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(context_length=128, d_model=32, n_heads=2, n_layers=2,
                              dropout=0.0)).eval()


# --- the store and the questions ---------------------------------------------------------------

def test_cut_passages_keeps_every_word_in_order_and_respects_the_limit():
    rng = random.Random(0)
    vocab = ["liberty", "union", "tax", "army", "a", "the", "peace", "trade"]
    for _ in range(50):
        sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30))) + "."
                     for _ in range(rng.randint(1, 8))]
        text = " ".join(sentences)
        for max_words in (1, 5, 12, 40):
            pieces = cut_passages(text, max_words)
            assert " ".join(pieces).split() == text.split()
            assert all(1 <= len(p.split()) <= max_words for p in pieces)
    assert cut_passages("One two. Three four five. Six.", 5) == ["One two. Three four five.", "Six."]
    with pytest.raises(ValueError, match="max_words"):
        cut_passages("text", 0)


def test_store_fields_and_round_trip(tmp_path):
    store = build_store(ADDRESSES, max_words=12, min_words=3)
    assert [p["id"] for p in store] == list(range(len(store)))
    for p in store:
        a = ADDRESSES[p["address"]]
        assert (p["president"], p["year"]) == (a["name"], a["year"]) and p["text"] in a["text"]
    assert passage_text(store[0]).startswith("In 1801, Ada Adams said: The harvest")
    path = save_store(store, tmp_path / "s" / "store.json")
    assert load_store(path) == store
    sampled = build_store(ADDRESSES, max_words=12, min_words=3, per_address=1, seed=4)
    assert len(sampled) == 3 and sampled == build_store(ADDRESSES, 12, 3, per_address=1, seed=4)


def test_load_store_refuses_damaged_or_foreign_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_store(bad)
    bad.write_text(json.dumps([{"instruction": "hi", "output": "ho"}]))
    with pytest.raises(ValueError, match="not a gptbook document store"):
        load_store(bad)
    store = build_store(ADDRESSES, max_words=12, min_words=3)
    store[1] = dict(store[1], year="1802")
    bad.write_text(json.dumps({"format": "gptbook-rag-store-1", "passages": store}))
    with pytest.raises(ValueError, match="passage 1 needs a int 'year'"):
        load_store(bad)
    with pytest.raises(FileNotFoundError):
        load_store(tmp_path / "missing.json")


def test_questions_are_answered_by_their_passage_only():
    store = build_store(ADDRESSES, max_words=12, min_words=3)
    train, test = split_addresses(3, test_frac=0.34, seed=0)
    assert sorted(train + test) == [0, 1, 2] and len(test) == 1
    qs = make_questions(store, [0, 1, 2], quote_words=3, seed=0)
    assert qs and len({q["passage"] for q in qs}) == len(qs)
    for q in qs:
        p = store[q["passage"]]
        assert q["quote"] in p["text"] and q["address"] == p["address"]
        assert q["answer"] == (p["president"] if q["kind"] == "who" else str(p["year"]))
        assert q["question"] == QUESTION_TEMPLATES[q["kind"]].format(quote=q["quote"])
        quote = tuple(words(q["quote"]))
        for o in store:
            w = words(o["text"])
            grams = {tuple(w[i:i + len(quote)]) for i in range(len(w))}
            assert (quote in grams) == (o["id"] == p["id"])
    only_test = make_questions(store, test, quote_words=3, seed=0)
    assert {q["address"] for q in only_test} <= set(test)


# --- BM25 ----------------------------------------------------------------------------------------

def test_bm25_scores_equal_rank_bm25_exactly():
    rank_bm25 = pytest.importorskip("rank_bm25")
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(30)] + ["the"] * 10  # "the" is in most documents: negative idf
    corpus = [[rng.choice(vocab) for _ in range(rng.randint(1, 25))] for _ in range(60)]
    for params in ({}, {"k1": 1.2, "b": 0.5, "epsilon": 0.1}, {"k1": 2.0, "b": 1.0}):
        ours, ref = BM25(corpus, **params), rank_bm25.BM25Okapi(corpus, **params)
        for _ in range(40):
            query = [rng.choice(vocab + ["unseen"]) for _ in range(rng.randint(1, 8))]
            assert np.array_equal(ours.scores(query), ref.get_scores(query))
    assert any(v < 0 for v in (math.log(60 - len(d) + 0.5) - math.log(len(d) + 0.5)
                                for d, _ in ours.postings.values()))  # the epsilon rule was used


def test_bm25_on_the_shipped_addresses_equals_rank_bm25():
    rank_bm25 = pytest.importorskip("rank_bm25")
    from gptbook.corpora import load_sotu
    store = build_store(load_sotu()[:12], max_words=40)
    corpus = [words(passage_text(p)) for p in store]
    ours, ref = BM25(corpus), rank_bm25.BM25Okapi(corpus)
    for q in make_questions(store, range(12), n=25, quote_words=6, seed=0):
        assert np.array_equal(ours.scores(words(q["question"])), ref.get_scores(words(q["question"])))


def test_bm25_search_ranks_by_score_then_id():
    bm25 = BM25([["a", "b"], ["a"], ["c"], ["a"]])
    ids, scores = bm25.search([["a"], ["zzz"]], k=4)
    assert ids[0].tolist() == [1, 3, 0, 2] and scores[0, 0] == scores[0, 1] > scores[0, 2] > 0
    assert ids[1].tolist() == [0, 1, 2, 3] and not scores[1].any()
    with pytest.raises(ValueError):
        BM25([])


# --- metrics and fusion -----------------------------------------------------------------------

def test_recall_at_k_and_mrr_by_hand():
    ranked = [[3, 1, 2], [5, 6, 7], [9, 8, 4]]
    gold = [1, 7, 0]
    assert recall_at_k(ranked, gold, 1) == 0
    assert recall_at_k(ranked, gold, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, gold, 3) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, gold, 10) == pytest.approx(2 / 3)
    assert mean_reciprocal_rank(ranked, gold) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    # several relevant ids: the share found
    assert recall_at_k([[1, 2, 3, 4]], [{2, 4, 9}], 2) == pytest.approx(1 / 3)
    assert recall_at_k(np.array([[1, 2, 3, 4]]), [[2, 4, 9]], 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(ranked, gold, 0)
    with pytest.raises(ValueError, match="as many"):
        recall_at_k(ranked, gold[:2], 1)


def test_recall_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(30)])
    gold = rng.integers(0, 50, 30)
    for k in (1, 5, 20):
        hits = sum(int(g in r[:k]) for r, g in zip(ranked.tolist(), gold.tolist()))
        assert recall_at_k(ranked, gold, k) == pytest.approx(hits / 30)


def test_reciprocal_rank_fusion_by_hand():
    a = np.array([[1, 2, 3]])
    b = np.array([[3, 1, 4]])
    # 1: 1/61 + 1/62, 3: 1/63 + 1/61, 2: 1/62, 4: 1/63
    assert reciprocal_rank_fusion([a, b], k=60, top=4).tolist() == [[1, 3, 2, 4]]
    assert reciprocal_rank_fusion([a, a]).tolist() == a.tolist()
    # weights: with b's weight 0 the fusion is a's order, with a's weight 0 it is b's
    assert reciprocal_rank_fusion([a, b], weights=[1, 0]).tolist() == [[1, 2, 3]]
    assert reciprocal_rank_fusion([a, b], weights=[0, 1]).tolist() == [[3, 1, 4]]
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([a, b], weights=[1])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([a, np.array([[1, 2, 3], [4, 5, 6]])])


# --- search ---------------------------------------------------------------------------------------

def test_exact_top_k_and_ivf_with_every_list_open_agree_with_sorting():
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(500, 16, generator=g), dim=1)
    queries = F.normalize(torch.randn(40, 16, generator=g), dim=1)
    scores, ids = top_k_exact(queries, keys, k=7, chunk=16)
    full = queries @ keys.T
    assert torch.equal(ids, full.argsort(1, descending=True)[:, :7])
    assert torch.allclose(scores, full.gather(1, ids))
    index = IVFIndex(keys, n_lists=10, seed=0)
    assert len(index) == 500 and sorted(index.ids.tolist()) == list(range(500))
    s_all, i_all = index.search(queries, k=7, n_probe=10)
    assert torch.equal(i_all, ids) and torch.allclose(s_all, scores)
    s_one, i_one = index.search(queries, k=7, n_probe=1)
    assert (s_one <= scores + 1e-6).all()  # an approximate search can only miss, never invent
    assert recall_at_k(i_one.tolist(), [set(r) for r in ids.tolist()], 7) < 1


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centers = torch.eye(4)
    x = F.normalize(centers.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 4, generator=g), dim=1)
    found = kmeans(x, 4, iters=10, seed=0)
    assert torch.allclose(found.norm(dim=1), torch.ones(4))
    assert sorted((found @ centers.T).argmax(1).tolist()) == [0, 1, 2, 3]


# --- the dense encoder and the contrastive loss ------------------------------------------------

def test_mean_pool_ignores_padding_and_embedding_does_not_depend_on_the_batch(tiny, enc):
    h = torch.randn(2, 4, 3)
    pooled = mean_pool(h, torch.tensor([2, 4]))
    assert torch.allclose(pooled[0], h[0, :2].mean(0)) and torch.allclose(pooled[1], h[1].mean(0))
    ids, lengths = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    encoder = DenseEncoder(tiny, enc)
    texts = ["A short one.", "A much longer text, with many more words in it than the first."]
    together = encoder.embed(texts, batch_size=2)
    alone = torch.cat([encoder.embed([t]) for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(2))


def test_frozen_blocks_change_nothing_but_what_trains(tiny, enc):
    import copy
    texts = ["Peace holds.", "The debt fell by a third this year.", "War came."]
    full = DenseEncoder(copy.deepcopy(tiny), enc).embed(texts)
    split = DenseEncoder(copy.deepcopy(tiny), enc, frozen_blocks=1)
    assert torch.allclose(split.embed(texts), full, atol=1e-5)
    assert len(split._kept) == 3  # the lower states were kept ...
    assert torch.allclose(split.embed(texts), full, atol=1e-5)  # ... and give the same vectors
    trainable = {n for n, p in split.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.1.", "final_norm")) for n in trainable)
    with pytest.raises(ValueError, match="frozen_blocks"):
        DenseEncoder(tiny, enc, frozen_blocks=3)


def test_in_batch_loss_is_cross_entropy_over_the_batch():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    p = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    logits = q @ p.T / 0.1
    manual = -(logits.diag() - logits.logsumexp(1)).mean()
    assert torch.allclose(in_batch_loss(q, p, 0.1), manual)
    with pytest.raises(ValueError):
        in_batch_loss(q, p[:3])


# --- generation and the RAG-Sequence marginalisation -------------------------------------------

def test_marginalize_by_hand():
    pz = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    py_z = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.6, 0.3]], dtype=torch.float64)
    expected = (pz[:, None] * py_z).sum(0)  # p(y|x) = sum_z p(z|x) p(y|x,z)
    assert torch.allclose(marginalize(pz.log(), py_z.log()).exp(), expected)
    # no underflow where the probabilities are far below float64's range
    tiny = marginalize(pz.log(), py_z.log() - 2000)
    assert torch.allclose(tiny, expected.log() - 2000)
    with pytest.raises(ValueError):
        marginalize(pz.log(), py_z.log().T)


def test_answer_logprobs_equal_the_product_of_next_token_probabilities(tiny, enc):
    prompts = ["Who said: \"peace holds\"?", "In which year?"]
    answers = ["Ben Brown", "1802"]
    got = answer_logprobs(tiny, enc, prompts, answers, batch_size=1)
    for prompt, answer, value in zip(prompts, answers, got):
        ids, total = enc.encode(prompt), 0.0
        for t in enc.encode(answer) + [EOT]:
            with torch.no_grad():
                logp = tiny(torch.tensor([ids])).double().log_softmax(-1)[0, -1]
            total += float(logp[t])
            ids = ids + [t]
        assert value.item() == pytest.approx(total, abs=1e-5)
    assert torch.allclose(answer_logprobs(tiny, enc, prompts, answers, batch_size=2), got, atol=1e-5)


def test_greedy_answers_follow_generate(tiny, enc):
    prompts = ["Hello there", "The State of the Union"]
    got = greedy_answers(tiny, enc, prompts, max_new_tokens=5)
    for prompt, answer in zip(prompts, got):
        ids = torch.tensor(enc.encode(prompt))
        new = generate(tiny, ids, 5, eos_id=EOT).tolist()[len(ids):]
        new = new[:new.index(EOT)] if EOT in new else new
        assert answer == enc.decode(new).strip()


def test_rag_example_fits_the_passages_it_can(enc):
    store = build_store(ADDRESSES, max_words=12, min_words=3)
    q = {"question": 'Who said: "Peace holds."?', "answer": "Ben Brown"}
    ex = rag_example(q, store[:3], enc, max_tokens=10_000)
    assert ex["n_passages"] == 3 and ex["input"].split("\n\n")[0] == passage_text(store[0])
    one = len(enc.encode(format_prompt(rag_example(q, store[:1], enc, 10_000))))
    assert rag_example(q, store[:3], enc, max_tokens=one)["n_passages"] == 1
    closed = rag_example(q, store[:3], enc, max_tokens=5)
    assert closed["n_passages"] == 0 and closed["input"] == "" and closed["output"] == "Ben Brown"


def test_rag_sequence_picks_the_largest_marginal(tiny, enc):
    store = build_store(ADDRESSES, max_words=12, min_words=3)
    q = {"question": 'Who said: "Trade with France grew"?', "answer": "Ada Adams"}
    passages = [store[1], store[4], store[2]]
    scores = torch.tensor([[0.3, 0.1, 0.2]])
    out = rag_sequence_answers(tiny, enc, [q], [passages], scores, temperature=0.1,
                               max_tokens=120, max_new_tokens=4)[0]
    # brute force, in probabilities: sum_z p(z|x) p(y|x,z) for each candidate
    pz = torch.softmax(scores[0].double() / 0.1, 0)
    prompts = [format_prompt(rag_example(q, [z], enc, 120)) for z in passages]
    brute = [sum(float(pz[j]) * math.exp(float(answer_logprobs(tiny, enc, [prompts[j]], [" " + y])[0]))
                 for j in range(3)) for y in out["candidates"]]  # the answer follows a space
    assert out["candidates"] == list(dict.fromkeys(greedy_answers(tiny, enc, prompts, 4)))
    assert np.allclose(np.exp(out["log_p"]), brute, rtol=1e-6)
    assert out["answer"] == out["candidates"][int(np.argmax(brute))]


def test_exact_match():
    assert exact_match("  george  WASHINGTON.", "George Washington")
    assert exact_match('"1790"', "1790")
    assert not exact_match("1791", "1790") and not exact_match("George", "George Washington")


def test_passage_titles_hold_the_answers_as_the_same_tokens():
    """The generator copies its answer: with the book's tokenizer, " <year>" and " <name>" are
    token runs of the passage exactly as they are of the answer that follows "### Answer:"."""
    from gptbook.base import base_dir
    from gptbook.tokenizer import ByteLevelBPE
    book = ByteLevelBPE.load(base_dir() / "tokenizer.json")
    store = build_store(ADDRESSES, max_words=12, min_words=3)
    for p in store:
        text = book.encode_ordinary(passage_text(p))
        for answer in (p["president"], str(p["year"])):
            a = book.encode_ordinary(" " + answer)
            assert any(text[i:i + len(a)] == a for i in range(len(text))), (answer, p)
