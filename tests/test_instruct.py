"""gptbook.instruct: the generated instruction set, the Alpaca loader, collate's masks, the loss,
saving a fine-tuned model and respond()."""
import json
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from gptbook.instruct import (TASKS, InstructionDataset, build_instruction_dataset, check_answer, collate,
                              format_prompt, instruction_loss, load_alpaca, respond, rhymes, save_alpaca,
                              split_by_task, summarise, token_f1)
from gptbook.model import GPTConfig, GPTModel
from gptbook.tokenizer import gpt2_encoding

EOT = 50256


@pytest.fixture(scope="module")
def data():
    return build_instruction_dataset(seed=7, n_per_task=30)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    cfg = GPTConfig(context_length=96, d_model=32, n_heads=2, n_layers=1, dropout=0.0)
    return GPTModel(cfg).eval()


# --- the generated data ------------------------------------------------------------------------------

def test_dataset_is_deterministic_and_covers_every_task(data):
    assert build_instruction_dataset(seed=7, n_per_task=30) == data
    assert build_instruction_dataset(seed=8, n_per_task=30) != data
    counts = Counter(ex["task"] for ex in data)
    assert len(counts) >= 8 and set(counts) == set(TASKS) and set(counts.values()) == {30}
    for ex in data:
        assert set(ex) == {"instruction", "input", "output", "task"}
        assert all(isinstance(ex[k], str) for k in ex) and ex["instruction"] and ex["output"]
    questions = [(ex["task"], ex["instruction"], ex["input"]) for ex in data]
    assert len(set(questions)) == len(questions)  # no question repeats within a task


def test_adding_a_task_changes_no_other(data):
    only = build_instruction_dataset(seed=7, n_per_task=30, tasks=["arithmetic"])
    assert only == [ex for ex in data if ex["task"] == "arithmetic"]
    with pytest.raises(ValueError, match="unknown task"):
        build_instruction_dataset(tasks=["poetry"])
    with pytest.raises(ValueError, match="n_per_task"):
        build_instruction_dataset(n_per_task=0)


def test_answers_are_correct(data):
    """Recompute a sample of answers independently of the generator."""
    from gptbook.instruct import _cmu  # the cached CMU dictionary (loading it again takes seconds)

    cmu = _cmu()
    for ex in random.Random(0).sample(data, 120):
        task, ins, inp, out = ex["task"], ex["instruction"], ex["input"], ex["output"]
        assert check_answer(ex, out)
        quoted = ins.split('"')[1] if '"' in ins else None
        if task == "uppercase":
            assert out == inp.upper()
        elif task == "lowercase":
            assert out == inp.lower()
        elif task == "word_count":
            assert int(out) == len(inp.split())
        elif task == "first_word":
            assert inp.startswith(out)
        elif task == "last_word":
            assert inp.rstrip(".").endswith(out)
        elif task == "reverse_word":
            assert out == quoted[::-1]
        elif task == "alphabetical":
            assert out.split(", ") == sorted(inp.split(", "))
        elif task == "arithmetic":
            a, op, b = ins.rstrip("?.").split()[-3:]
            assert int(out) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        elif task == "unit_conversion":
            value = next(int(w) for w in ins.split() if w.isdigit())
            assert int(out.split()[0]) % value == 0 and out.split()[1] in ins
        elif task == "syllables":
            assert all(sum(p[-1].isdigit() for p in pron) == int(out) for pron in cmu[quoted])
        elif task == "rhyme":
            assert rhymes(quoted, out)
        elif task == "spam":
            assert out in ("yes", "no") and inp.startswith("Subject: ")
        elif task == "sotu_year":
            assert 1790 <= int(out) <= 2021


def test_checkers_are_task_aware(data):
    rhyme = {"instruction": 'Give a word that rhymes with "night".', "input": "", "output": "light", "task": "rhyme"}
    assert check_answer(rhyme, "light") and check_answer(rhyme, "Fight.") and check_answer(rhyme, " bright ")
    assert not check_answer(rhyme, "night") and not check_answer(rhyme, "day") and not check_answer(rhyme, "")
    upper = {"instruction": "x", "input": "We are.", "output": "WE ARE.", "task": "uppercase"}
    assert check_answer(upper, " WE  ARE. ") and not check_answer(upper, "we are.") and not check_answer(upper, "WE ARE")
    unit = {"instruction": "Convert 3 feet to inches.", "input": "", "output": "36 inches", "task": "unit_conversion"}
    assert check_answer(unit, "36") and check_answer(unit, "36 Inches.") and not check_answer(unit, "35 inches")
    spam = {"instruction": "x", "input": "y", "output": "yes", "task": "spam"}
    assert check_answer(spam, "Yes.") and not check_answer(spam, "yes, it is")
    alpha = {"instruction": "x", "input": "b, a", "output": "a, b", "task": "alphabetical"}
    assert check_answer(alpha, "a,b") and not check_answer(alpha, "b, a")
    plain = {"instruction": "x", "input": "", "output": "Paris"}  # no task: compared with the reference
    assert check_answer(plain, "paris") and not check_answer(plain, "Rome")


def test_token_f1():
    assert token_f1("The cat.", "the cat") == 1.0
    assert token_f1("a b c d", "a b") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert token_f1("a a", "a") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # repeats count once each
    assert token_f1("x", "y") == 0.0 and token_f1("", "") == 1.0 and token_f1("", "y") == 0.0


def test_split_by_task(data):
    train, val, test = split_by_task(data, seed=3, fracs=(0.6, 0.2, 0.2))
    assert split_by_task(data, seed=3, fracs=(0.6, 0.2, 0.2)) == (train, val, test)
    assert split_by_task(data, seed=4, fracs=(0.6, 0.2, 0.2))[2] != test
    for part, n in ((train, 18), (val, 6), (test, 6)):
        assert Counter(ex["task"] for ex in part) == {t: n for t in TASKS}
    ids = lambda part: {id(ex) for ex in part}
    assert not ids(train) & ids(test) and not ids(val) & ids(test) and len(ids(train) | ids(val) | ids(test)) == len(data)
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_task(data, fracs=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="too few"):
        split_by_task(data[:2], fracs=(0.6, 0.2, 0.2))


# --- Alpaca files -------------------------------------------------------------------------------------

def test_load_alpaca_round_trip_and_defaults(tmp_path, data):
    path = save_alpaca(data[:10], tmp_path / "sub" / "set.json")
    assert load_alpaca(path) == data[:10]
    assert load_alpaca(str(path)) == data[:10]
    (tmp_path / "plain.json").write_text(json.dumps([{"instruction": "Say hi.", "output": "hi"},
                                                     {"instruction": "Add.", "input": None, "output": "2", "id": 7}]))
    loaded = load_alpaca(tmp_path / "plain.json")
    assert loaded == [{"instruction": "Say hi.", "output": "hi", "input": ""},
                      {"instruction": "Add.", "input": "", "output": "2", "id": 7}]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"instruction": "a", "output": "b"}), "JSON list"),
    (json.dumps([]), "empty"),
    (json.dumps([{"instruction": "a", "output": "b"}, "text"]), "example 1 is a str"),
    (json.dumps([{"instruction": "a", "response": "b"}]), "example 0 has no 'output'"),
    (json.dumps([{"instruction": "a", "output": 3}]), "'output' must be a string"),
    (json.dumps([{"instruction": "  ", "output": "b"}]), "empty instruction"),
])
def test_load_alpaca_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_alpaca(path)


def test_load_alpaca_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no instruction file"):
        load_alpaca(tmp_path / "nope.json")


# --- prompts, collate and the loss ------------------------------------------------------------------

def test_format_prompt_and_dataset_boundaries(data):
    enc = gpt2_encoding()
    with_input = next(ex for ex in data if ex["input"])
    no_input = next(ex for ex in data if not ex["input"])
    assert "### Input:" in format_prompt(with_input) and "### Input:" not in format_prompt(no_input)
    assert format_prompt(no_input).endswith("### Answer:\n") and no_input["instruction"] in format_prompt(no_input)
    ds = InstructionDataset([with_input, no_input], enc)
    for (ids, n_prompt), ex in zip(ds, [with_input, no_input]):
        assert enc.decode(ids[:n_prompt]) == format_prompt(ex) and enc.decode(ids[n_prompt:]) == ex["output"]
    short = InstructionDataset([with_input, no_input], enc, max_length=len(ds[1][0]) - 1)
    assert len(short) + short.n_dropped == 2 and short.n_dropped >= 1


BATCH = [([11, 12, 13, 14, 15, 16], 4),  # prompt 11-14, answer 15 16
         ([21, 22, 23], 1),              # prompt 21, answer 22 23
         ([31, 32], 2)]                  # prompt only (nothing to learn but the end)
I = -100


def test_collate_pads_and_keeps_one_end_of_text():
    inputs, targets = collate(BATCH, pad_id=EOT)
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[11, 12, 13, 14, 15, 16],
                               [21, 22, 23, EOT, EOT, EOT],
                               [31, 32, EOT, EOT, EOT, EOT]]
    assert targets.tolist() == [[12, 13, 14, 15, 16, EOT],
                                [22, 23, EOT, I, I, I],
                                [32, EOT, I, I, I, I]]


def test_collate_masks_the_prompt():
    _, targets = collate(BATCH, pad_id=EOT, mask_prompt=True)
    assert targets.tolist() == [[I, I, I, 15, 16, EOT],
                                [22, 23, EOT, I, I, I],
                                [I, EOT, I, I, I, I]]


def test_collate_truncates_and_accepts_plain_lists():
    inputs, targets = collate(BATCH, pad_id=EOT, mask_prompt=True, max_length=4)
    assert inputs.tolist() == [[11, 12, 13, 14], [21, 22, 23, EOT], [31, 32, EOT, EOT]]
    assert targets.tolist() == [[I, I, I, 15], [22, 23, EOT, I], [I, EOT, I, I]]
    inputs, targets = collate([[5, 6, 7], torch.tensor([8])], pad_id=0, ignore_index=-1)
    assert inputs.tolist() == [[5, 6, 7], [8, 0, 0]] and targets.tolist() == [[6, 7, 0], [0, -1, -1]]
    with pytest.raises(ValueError, match="non-empty"):
        collate([])
    with pytest.raises(ValueError, match="no tokens"):
        collate([[1, 2], []])
    with pytest.raises(ValueError, match="prompt length"):
        collate([([1, 2], 3)])
    with pytest.raises(ValueError, match="max_length"):
        collate([[1, 2]], max_length=0)


def test_instruction_loss_equals_masked_cross_entropy(small_model):
    inputs, targets = collate(BATCH, pad_id=EOT, mask_prompt=True)
    full = F.cross_entropy(small_model(inputs).flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.allclose(instruction_loss(small_model, inputs, targets), full, atol=1e-5)
    per_token = instruction_loss(small_model, inputs, targets, reduction="none")
    assert per_token.shape == ((targets != -100).sum(),)
    with pytest.raises(ValueError, match="nothing to learn"):
        instruction_loss(small_model, inputs, torch.full_like(targets, -100))


# --- training, saving, answering ---------------------------------------------------------------------

def test_finetune_lowers_the_loss_and_round_trips_through_a_checkpoint(tmp_path, data, small_model):
    import copy

    from gptbook.instruct import example_losses, finetune
    from gptbook.train import load_checkpoint, save_checkpoint

    enc = gpt2_encoding()
    model = copy.deepcopy(small_model)
    examples = [ex for ex in data if ex["task"] in ("syllables", "arithmetic")][:24]
    ds = InstructionDataset(examples, enc, max_length=96)
    assert len(ds) == 24
    before = example_losses(model, ds)
    hist = finetune(model, ds, ds, epochs=2, batch_size=8, lr=3e-3, eval_every=3, progress=False)
    after = example_losses(model, ds)
    mean = lambda pairs: sum(s for s, _ in pairs) / sum(c for _, c in pairs)
    assert len(hist["train_loss"]) == 6 and hist["val_step"] == [0, 3, 6]
    assert mean(after) < mean(before) and hist["val_loss"][-1] == pytest.approx(mean(after), rel=1e-4)
    assert hist["val_loss"][0] == pytest.approx(mean(before), rel=1e-4)
    path = save_checkpoint(tmp_path / "ft.pt", model, step=6, history=hist)
    reloaded = load_checkpoint(path)
    x = torch.tensor([ds[0][0]])
    assert torch.equal(reloaded(x), model(x))
    q = examples[0]
    assert respond(reloaded, q["instruction"], q["input"], enc, max_new_tokens=8) == \
        respond(model, q["instruction"], q["input"], enc, max_new_tokens=8)


class _Scripted(torch.nn.Module):
    """A fake model that emits a fixed token sequence, whatever its input."""

    def __init__(self, script):
        super().__init__()
        self.cfg = GPTConfig(context_length=512, d_model=8, n_heads=1, n_layers=1)
        self.script, self.w = script, torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, cache=None):
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.cfg.vocab_size)
        logits[:, -1, self.script[min(self.n_calls, len(self.script) - 1)]] = 1.0
        self.n_calls += 1
        return logits

    def new_cache(self):
        return None


def test_respond_stops_at_end_of_text():
    enc = gpt2_encoding()
    hello, world = enc.encode_ordinary(" hello")[0], enc.encode_ordinary(" world")[0]
    model = _Scripted([hello, world, EOT, hello])
    model.n_calls = 0
    answer = respond(model, "Say something.", enc=enc, max_new_tokens=10, use_cache=False)
    assert isinstance(answer, str) and answer == "hello world"
    model = _Scripted([EOT, hello, EOT])  # an end-of-text first is ruled out: the next best token is taken
    model.n_calls = 0
    assert respond(model, "Say something.", enc=enc, max_new_tokens=10, use_cache=False) != ""
    model.n_calls = 0
    assert respond(model, "Say something.", enc=enc, max_new_tokens=10, min_new_tokens=0, use_cache=False) == ""
    with pytest.raises(ValueError, match="instruction"):
        respond(model, "  ", enc=enc)


def test_respond_with_a_real_model_returns_text(small_model):
    enc = gpt2_encoding()
    out = respond(small_model, "What is 2 + 2?", enc=enc, max_new_tokens=5)
    assert isinstance(out, str) and "<|endoftext|>" not in out
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert respond(small_model, "Hi.", enc=enc, max_new_tokens=6, temperature=1.0, generator=g1) == \
        respond(small_model, "Hi.", enc=enc, max_new_tokens=6, temperature=1.0, generator=g2)


def test_summarise_groups_by_task():
    rows = [{"task": "spam", "exact": True, "f1": 1.0, "nll": 2.0, "tokens": 2},
            {"task": "spam", "exact": False, "f1": 0.0, "nll": 6.0, "tokens": 2},
            {"task": "arithmetic", "exact": True, "f1": 1.0, "nll": 1.0, "tokens": 4}]
    s = summarise(rows)
    assert list(s) == ["spam", "arithmetic", "all"]
    assert s["spam"] == {"n": 2, "exact": 0.5, "f1": 0.5, "loss": 2.0}
    assert s["all"]["loss"] == pytest.approx(9.0 / 8) and s["all"]["exact"] == pytest.approx(2 / 3)
