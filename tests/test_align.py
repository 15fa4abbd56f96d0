"""Chapter 11: preference data, the reward model, best-of-n, DPO (equal to TRL's) and PPO's pieces."""
import copy
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from gptbook import align as A
from gptbook import ppo
from gptbook.instruct import build_instruction_dataset, check_answer, format_prompt
from gptbook.model import GPTConfig, GPTModel
from gptbook.pretrain_data import load_tokenizer


@pytest.fixture(scope="module")
def enc():
    return load_tokenizer("book")


def tiny_model(vocab=4096, seed=0, ctx=128):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab, context_length=ctx, d_model=32, n_heads=2, n_layers=2, dropout=0.0)
    return GPTModel(cfg).eval()


# ------------------------------------------------------------------------------------ encoding


def test_pack_masks_exactly_the_response_predictions():
    ids, mask, lengths = A.pack([[1, 2, 3], [4, 5]], [[10, 11], [12, 13, 14]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 10, 11], [4, 5, 12, 13, 14]]
    # position t is masked when ids[t + 1] is a response token
    assert mask.tolist() == [[False, False, True, True, False], [False, True, True, True, False]]
    assert lengths.tolist() == [5, 5]


def test_pack_cuts_the_prompt_never_the_response():
    ids, mask, lengths = A.pack([[1, 2, 3, 4, 5]], [[10, 11]], pad_id=0, max_length=4)
    assert ids.tolist() == [[4, 5, 10, 11]] and mask.tolist() == [[False, True, True, False]]
    with pytest.raises(ValueError, match="no room"):
        A.pack([[1]], [[10, 11, 12]], pad_id=0, max_length=3)
    with pytest.raises(ValueError, match="as many prompts"):
        A.pack([[1]], [], pad_id=0)


def test_sequence_logprobs_equal_cross_entropy_of_each_pair_alone():
    model = tiny_model(vocab=50)
    prompts, responses = [[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[10, 11], [12, 13, 14], [15]]
    ids, mask, _ = A.pack(prompts, responses, pad_id=0)
    got = A.sequence_logprobs(model, ids, mask)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        x = torch.tensor([p + r])
        want = -F.cross_entropy(model(x)[0, len(p) - 1:-1], x[0, len(p):], reduction="sum")
        torch.testing.assert_close(got[i], want)


# ------------------------------------------------------------------------------------ preference data


def test_preference_pairs_layout_and_rejected_always_wrong(enc):
    examples = build_instruction_dataset(seed=5, n_per_task=3, tasks=("first_word", "spam", "arithmetic"))
    pairs = A.build_preference_pairs(tiny_model(), enc, examples, n_samples=2, max_new_tokens=4, seed=1)
    assert 0 < len(pairs) <= len(examples)
    by_request = {(ex["instruction"], ex["input"]): ex for ex in examples}
    for p in pairs:
        assert set(p) == {"instruction", "input", "chosen", "rejected", "task", "kind"}
        ex = by_request[p["instruction"], p["input"]]
        assert check_answer(ex, p["chosen"]) and not check_answer(ex, p["rejected"])
        assert p["kind"] in A.PAIR_KINDS and p["rejected"]
    again = A.build_preference_pairs(tiny_model(), enc, examples, n_samples=2, max_new_tokens=4, seed=1)
    assert again == pairs


def test_preference_pairs_prefer_the_models_own_right_answer(enc, monkeypatch):
    """A right sample is chosen over each wrong one (kind "own"); with no right sample the
    reference stands in ("reference"); too few mistakes are filled in by the reference cut
    short ("truncated")."""
    ex = {"instruction": "Say the words.", "input": "", "output": "red green blue", "task": "echo"}
    answers = {0: ["red green blue", "red", "red", "blue"], 1: ["green", "green", "", "green"]}
    calls = iter(answers)

    def fake_samples(model, enc_, prompts, n, max_new_tokens, temperature=1.0, generator=None):
        rows = answers[next(calls)]
        return [[A.response_ids(enc_, t) for t in rows]]

    monkeypatch.setattr(A, "sample_responses", fake_samples)
    own = A.build_preference_pairs(None, enc, [ex], n_samples=4, pairs_per_example=3)
    ref_ids = A._ids(enc, "red green blue")
    cut = enc.decode(ref_ids[: len(ref_ids) // 2]).strip()
    assert [(p["chosen"], p["rejected"], p["kind"]) for p in own] == [
        ("red green blue", "red", "own"), ("red green blue", "blue", "own"),
        ("red green blue", cut, "truncated")]
    ref = A.build_preference_pairs(None, enc, [ex], n_samples=4, pairs_per_example=1)
    assert [(p["chosen"], p["rejected"], p["kind"]) for p in ref] == [("red green blue", "green", "reference")]


def test_preferences_round_trip_and_refuse_bad_files(tmp_path):
    pairs = [{"instruction": "Say yes.", "input": "", "chosen": "yes", "rejected": "no", "task": "t",
              "kind": "sample"}]
    path = A.save_preferences(pairs, tmp_path / "prefs.json")
    assert A.load_preferences(path) == pairs
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "x", "chosen": "a"}]))
    with pytest.raises(ValueError, match="rejected"):
        A.load_preferences(tmp_path / "bad.json")
    (tmp_path / "same.json").write_text(json.dumps([{"instruction": "x", "chosen": "a", "rejected": "a"}]))
    with pytest.raises(ValueError, match="same"):
        A.load_preferences(tmp_path / "same.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="JSON"):
        A.load_preferences(tmp_path / "junk.json")


# ------------------------------------------------------------------------------------ reward model


def test_bradley_terry_loss_is_the_logistic_loss_of_the_difference():
    torch.manual_seed(0)
    rc, rr = torch.randn(7, requires_grad=True), torch.randn(7, requires_grad=True)
    loss = A.bradley_terry_loss(rc, rr)
    want = F.binary_cross_entropy_with_logits(rc - rr, torch.ones(7))
    torch.testing.assert_close(loss, want)
    g = torch.autograd.grad(loss, (rc, rr))
    # d/dr_c of -log σ(r_c - r_r) is -(1 - σ(r_c - r_r)) = -σ(r_r - r_c), per pair, over the mean
    torch.testing.assert_close(g[0], -torch.sigmoid(rr - rc).detach() / 7)
    torch.testing.assert_close(g[1], torch.sigmoid(rr - rc).detach() / 7)


def test_reward_model_reads_the_last_real_token_whatever_the_padding():
    rm = A.RewardModel(tiny_model(vocab=50))
    torch.nn.init.normal_(rm.head.weight)
    ids, _, lengths = A.pack([[1, 2], [3, 4, 5, 6]], [[7, 8], [9]], pad_id=0)
    with torch.no_grad():
        batch = rm(ids, lengths)
    for i in range(2):
        with torch.no_grad():
            alone = rm(ids[i:i + 1, :lengths[i]], lengths[i:i + 1])
        torch.testing.assert_close(batch[i], alone[0])
    rm.normalize_(mean=float(batch.mean()), std=float(batch.std()))
    with torch.no_grad():
        torch.testing.assert_close(rm(ids, lengths), (batch - batch.mean()) / batch.std())


def test_length_baseline_learns_the_direction_from_training_pairs(enc):
    longer = [{"chosen": "a b c d", "rejected": "a"}] * 3
    acc, rule = A.length_baseline(longer, [{"chosen": "x y z", "rejected": "x"},
                                           {"chosen": "x", "rejected": "x y z"}], enc)
    assert rule == "longer" and acc == 0.5


# ------------------------------------------------------------------------------------ best-of-n


def test_best_of_n_expectation_equals_enumerating_every_subset():
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 6), torch.randn(4, 6)
    rewards[0, 1] = rewards[0, 4]  # a tie: the later response wins it
    for n in range(1, 7):
        subsets = list(itertools.combinations(range(6), n))
        want = sum(values[p, max(s, key=lambda i: (rewards[p, i].item(), i))].item()
                   for p in range(4) for s in subsets) / (4 * len(subsets))
        assert A.best_of_n_expectation(rewards, values, n) == pytest.approx(want, abs=1e-12)
    assert A.best_of_n_expectation(rewards, values, 1) == pytest.approx(values.mean().item())
    with pytest.raises(ValueError):
        A.best_of_n_expectation(rewards, values, 7)


def test_best_of_n_kl_is_exact_for_a_uniform_policy():
    # With N equally likely distinct responses and a reward that orders them, best-of-n puts
    # probability ((k+1)^n - k^n) / N^n on the response of rank k; its KL to uniform tends to
    # log n - (n-1)/n as N grows.
    N = 100_000
    for n in (1, 2, 4, 16):
        k = torch.arange(N, dtype=torch.float64)
        p = ((k + 1) / N) ** n - (k / N) ** n
        kl = (p * torch.log(p * N)).sum().item()
        assert kl == pytest.approx(A.best_of_n_kl(n), abs=1e-3)


# ------------------------------------------------------------------------------------ PPO pieces


def test_gae_matches_a_hand_computed_example():
    # one response of three tokens after a one-token prompt; γ = 0.9, λ = 0.5
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    values = torch.tensor([[0.0, 0.5, 1.0, 1.5]])
    mask = torch.tensor([[False, True, True, True]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=3: δ = 2 - 1.5 = 0.5,                 A = 0.5
    # t=2: δ = 0 + 0.9·1.5 - 1.0 = 0.35,      A = 0.35 + 0.45·0.5 = 0.575
    # t=1: δ = 1 + 0.9·1.0 - 0.5 = 1.4,       A = 1.4 + 0.45·0.575 = 1.65875
    torch.testing.assert_close(adv, torch.tensor([[0.0, 1.65875, 0.575, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 2.15875, 1.575, 2.0]]))


def test_gae_limits_and_padding():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    # λ = 1, γ = 1: the return is the sum of the rewards still to come (Monte Carlo)
    _, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    togo = (rewards * mask).flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(ret, togo)
    # λ = 0: the one-step temporal difference
    adv, _ = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.0)
    nxt = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(3, 1)], 1)
    torch.testing.assert_close(adv, (rewards + 0.9 * nxt - values) * mask)
    # what lies outside the mask never matters
    noisy = torch.where(mask, values, torch.full_like(values, 1e3))
    torch.testing.assert_close(ppo.gae(rewards, noisy, mask)[0], ppo.gae(rewards, values, mask)[0])


def test_kl_penalized_rewards():
    mask = torch.tensor([[False, True, True, False], [True, False, False, False]])
    logp, ref = torch.tensor([[0.0, -1.0, -2.0, 0.0], [-0.5, 0, 0, 0]]), torch.full((2, 4), -1.5)
    r = ppo.kl_penalized_rewards(torch.tensor([3.0, -1.0]), logp, ref, mask, beta=0.1)
    torch.testing.assert_close(r, torch.tensor([[0.0, -0.05, 0.05 + 3.0, 0.0], [-0.1 - 1.0, 0, 0, 0]]))


def test_ppo_clip_loss_by_hand_and_its_zero_gradient_when_clipped():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5, 1.1]])).requires_grad_()
    adv = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    mask = torch.tensor([[False, True, True, True]])
    loss = ppo.ppo_clip_loss(logp, old, adv, mask, clip=0.2)
    # ratio 1.5, A>0 -> clipped at 1.2: 2.4; ratio 0.5, A<0 -> min(-0.5, -0.8) = -0.8; ratio 1.1: 1.1
    assert loss.item() == pytest.approx(-(2.4 - 0.8 + 1.1) / 3)
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 1] == 0 and g[0, 0] == 0  # clipped, and masked
    assert g[0, 2].item() == pytest.approx(0.0)  # min picked the clipped term
    assert g[0, 3].item() == pytest.approx(-1.1 / 3)


# ------------------------------------------------------------------------------------ DPO = TRL


def test_dpo_loss_formula_in_float64():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8, dtype=torch.float64) * 5 for _ in range(4))
    for beta in (0.05, 0.1, 0.5):
        want = torch.stack([-torch.log(1 / (1 + torch.exp(-beta * ((a - c) - (b - d)))))
                            for a, b, c, d in zip(pc, pr, rc, rr)]).mean()
        torch.testing.assert_close(A.dpo_loss(pc, pr, rc, rr, beta), want)


@pytest.fixture(scope="module")
def trl_trainer(tmp_path_factory):
    """A real `trl.DPOTrainer` around a tiny random GPT-2 (offline; a word-level tokenizer built here)."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(63)} | {"<eos>": 63}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=63,
                     eos_token_id=63, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    args = trl.DPOConfig(output_dir=str(tmp_path_factory.mktemp("dpo")), beta=0.1, report_to=[],
                         use_cpu=True, precompute_ref_log_probs=False)
    data = Dataset.from_dict({"prompt": ["w1 w2"], "chosen": [" w3"], "rejected": [" w4"]})
    return trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=data,
                          processing_class=hf_tok)


class _LogProbModel:
    """Stands in for a causal LM: returns fixed per-token log-probabilities, as TRL's fused head would."""

    def __init__(self, log_probs):
        self.log_probs = log_probs

    def __call__(self, **kwargs):
        from types import SimpleNamespace
        lp = self.log_probs
        return SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
                               is_top1=torch.zeros_like(lp, dtype=torch.bool))


def test_dpo_loss_and_gradients_equal_trl_on_the_same_log_probabilities(trl_trainer):
    torch.manual_seed(1)
    B, T = 4, 7
    completion = torch.zeros(2 * B, T + 1, dtype=torch.long)
    for i in range(2 * B):
        completion[i, 3:3 + 1 + i % 4] = 1  # responses of 1 to 4 tokens after a 3-token prompt
    per_token = (torch.randn(2 * B, T).clamp(max=0) - 0.1) * completion[:, 1:]
    ref_seq = torch.randn(2 * B, dtype=torch.float64).float() * 3 - 5
    inputs = {"input_ids": torch.zeros(2 * B, T + 1, dtype=torch.long),
              "attention_mask": torch.ones(2 * B, T + 1, dtype=torch.long), "completion_mask": completion,
              "ref_chosen_logps": ref_seq[:B], "ref_rejected_logps": ref_seq[B:]}
    trl_trainer.precompute_ref_logps = True  # the reference log-probabilities come with the batch
    for beta in (0.1, 0.5):
        trl_trainer.beta = beta
        theirs_lp = per_token.clone().requires_grad_()
        theirs = trl_trainer._compute_loss(_LogProbModel(theirs_lp), inputs, False)
        (g_theirs,) = torch.autograd.grad(theirs, theirs_lp)
        ours_lp = per_token.clone().requires_grad_()
        seq = ours_lp.sum(1)
        ours = A.dpo_loss(seq[:B], seq[B:], ref_seq[:B], ref_seq[B:], beta=beta)
        (g_ours,) = torch.autograd.grad(ours, ours_lp)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=0)


def test_dpo_from_a_gptmodel_equals_trl_on_the_same_gpt2(trl_trainer):
    """End to end: our log-probabilities of a GPTModel holding the tiny GPT-2's weights, and our
    loss, give TRL's loss (its fused language-model head on the Hugging Face model) and the same
    gradient for every weight. The reference log-probabilities are given to both."""
    from gptbook.model import gpt2_config_from_hf, gpt2_state_dict

    hf = trl_trainer.model
    with torch.no_grad():  # move the policy away from its random start
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = GPTModel(gpt2_config_from_hf(hf.config.to_dict(), dropout=0.0))
    ours.load_state_dict(gpt2_state_dict(hf.state_dict()))
    ours.eval()
    hf.train(False)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    chosen, rejected = [[10, 11, 63], [12, 63], [13, 14, 15, 63]], [[16, 63], [17, 18, 19, 63], [20, 63]]
    ids, mask, lengths = A.pack(prompts + prompts, chosen + rejected, pad_id=63)
    completion = torch.zeros_like(ids)
    completion[:, 1:] = mask[:, :-1]  # TRL marks the response tokens themselves
    attention = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    ref_lp = torch.tensor([-9.0, -7.5, -12.0, -6.0, -13.0, -5.5])
    trl_trainer.precompute_ref_logps, trl_trainer.beta = True, 0.1
    theirs = trl_trainer._compute_loss(hf, {"input_ids": ids, "attention_mask": attention,
                                            "completion_mask": completion,
                                            "ref_chosen_logps": ref_lp[:3],
                                            "ref_rejected_logps": ref_lp[3:]}, False)
    theirs.backward()
    lp = A.sequence_logprobs(ours, ids, mask)
    mine = A.dpo_loss(lp[:3], lp[3:], ref_lp[:3], ref_lp[3:], beta=0.1)
    mine.backward()
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    grads = gpt2_state_dict({k: p.grad for k, p in hf.named_parameters() if p.grad is not None})
    mine_grads = dict(ours.named_parameters())
    assert len(grads) == len(mine_grads)
    for name, g in grads.items():
        torch.testing.assert_close(mine_grads[name].grad, g, rtol=1e-4, atol=1e-6, msg=name)
