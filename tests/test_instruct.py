"""gptbook.instruct: the generated instruction set, the Alpaca loader, collate's masks, the loss,
training, respond() with GPT-2's and the book's tokenizer, and the cached fine-tuned model."""
import json
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from gptbook.instruct import (SFT_RECIPE, TASKS, InstructionDataset, build_instruction_dataset,
                              check_answer, collate, evaluate_instructions, format_prompt,
                              instruction_loss, load_alpaca, respond, rhymes, save_alpaca, sft_recipe,
                              sft_splits, split_by_task, summarise, take_per_task, token_f1)
from gptbook.model import GPTConfig, GPTModel
from gptbook.tokenizer import gpt2_encoding
from gptbook.pretrain_data import load_tokenizer

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
    from gptbook.instruct_data import _cmu  # the cached CMU dictionary (loading it again takes seconds)

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


def test_well_formed_checks_the_form_not_the_content(data):
    from gptbook.instruct import well_formed

    assert all(well_formed(ex, ex["output"]) for ex in data)  # every reference is well formed
    ask = lambda task: {"task": task, "instruction": "x", "input": "", "output": ""}
    assert well_formed(ask("sotu_year"), "1066") and not well_formed(ask("sotu_year"), "it was 1066")
    assert well_formed(ask("spam"), "No.") and not well_formed(ask("spam"), "maybe")
    assert well_formed(ask("first_word"), "Yet") and not well_formed(ask("first_word"), "Yet we")
    assert well_formed(ask("uppercase"), "WE ARE.") and not well_formed(ask("uppercase"), "We are.")
    assert well_formed(ask("lowercase"), "we are.") and not well_formed(ask("lowercase"), "12")
    assert well_formed(ask("alphabetical"), "a, b") and not well_formed(ask("alphabetical"), "a b")
    assert well_formed(ask("unit_conversion"), "12 feet") and well_formed(ask("unit_conversion"), "12")
    assert not well_formed(ask("unit_conversion"), "feet")
    assert well_formed({"instruction": "x", "output": "y"}, "z") and not well_formed({"output": "y"}, " ")


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
    assert format_prompt(no_input).endswith("### Answer:") and no_input["instruction"] in format_prompt(no_input)
    ds = InstructionDataset([with_input, no_input], enc)
    for (ids, n_prompt), ex in zip(ds, [with_input, no_input]):
        assert enc.decode(ids[:n_prompt]) == format_prompt(ex)
        assert enc.decode(ids[n_prompt:]) == " " + ex["output"]
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
        collate([], pad_id=0)
    with pytest.raises(ValueError, match="no tokens"):
        collate([[1, 2], []], pad_id=0)
    with pytest.raises(ValueError, match="prompt length"):
        collate([([1, 2], 3)], pad_id=0)
    with pytest.raises(ValueError, match="max_length"):
        collate([[1, 2]], pad_id=0, max_length=0)
    with pytest.raises(TypeError):
        collate([[1, 2]])  # no default padding id: it must be the model's tokenizer's


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
    from gptbook.checkpoint import load_checkpoint, save_checkpoint

    enc = gpt2_encoding()
    model = copy.deepcopy(small_model)
    examples = [ex for ex in data if ex["task"] in ("syllables", "arithmetic")][:24]
    ds = InstructionDataset(examples, enc, max_length=96)
    assert len(ds) == 24
    before = example_losses(model, ds)
    hist = finetune(model, ds, ds, epochs=2, batch_size=8, lr=3e-3, eval_every=3, progress=False)
    assert ds.pad_id == EOT
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
    assert respond(reloaded, enc, q["instruction"], q["input"], max_new_tokens=8) == \
        respond(model, enc, q["instruction"], q["input"], max_new_tokens=8)


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
    answer = respond(model, enc, "Say something.", max_new_tokens=10, use_cache=False)
    assert isinstance(answer, str) and answer == "hello world"
    model = _Scripted([EOT, hello, EOT])  # an end-of-text first is ruled out: the next best token is taken
    model.n_calls = 0
    assert respond(model, enc, "Say something.", max_new_tokens=10, use_cache=False) != ""
    model.n_calls = 0
    assert respond(model, enc, "Say something.", max_new_tokens=10, min_new_tokens=0, use_cache=False) == ""
    with pytest.raises(ValueError, match="instruction"):
        respond(model, enc, "  ")


def test_respond_with_a_real_model_returns_text(small_model):
    enc = gpt2_encoding()
    out = respond(small_model, enc, "What is 2 + 2?", max_new_tokens=5)
    assert isinstance(out, str) and "<|endoftext|>" not in out
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert respond(small_model, enc, "Hi.", max_new_tokens=6, temperature=1.0, generator=g1) == \
        respond(small_model, enc, "Hi.", max_new_tokens=6, temperature=1.0, generator=g2)


def test_summarise_groups_by_task():
    rows = [{"task": "spam", "exact": True, "form": True, "f1": 1.0, "nll": 2.0, "tokens": 2},
            {"task": "spam", "exact": False, "form": False, "f1": 0.0, "nll": 6.0, "tokens": 2},
            {"task": "arithmetic", "exact": True, "form": True, "f1": 1.0, "nll": 1.0, "tokens": 4}]
    s = summarise(rows)
    assert list(s) == ["spam", "arithmetic", "all"]
    assert s["spam"] == {"n": 2, "exact": 0.5, "form": 0.5, "f1": 0.5, "loss": 2.0}
    assert s["all"]["loss"] == pytest.approx(9.0 / 8) and s["all"]["exact"] == pytest.approx(2 / 3)


# --- the book's tokenizer: no GPT-2 id anywhere ---------------------------------------------------------

@pytest.fixture(scope="module")
def book_enc():
    return load_tokenizer("book")


@pytest.fixture(scope="module")
def book_model(book_enc):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=book_enc.n_vocab, context_length=96, d_model=32, n_heads=2,
                    n_layers=1, dropout=0.0)
    return GPTModel(cfg).eval()


def test_the_book_tokenizer_pads_and_stops_with_its_own_end_of_text(data, book_enc, book_model):
    from gptbook.instruct import example_losses

    eot = book_enc.eot_token
    assert eot != EOT and eot < book_enc.n_vocab
    examples = [ex for ex in data if ex["task"] in ("first_word", "arithmetic")][:6]
    ds = InstructionDataset(examples, book_enc, max_length=96)
    assert ds.pad_id == eot
    for (ids, n_prompt), ex in zip(ds, examples):
        assert book_enc.decode(ids[:n_prompt]) == format_prompt(ex)
        assert book_enc.decode(ids[n_prompt:]) == " " + ex["output"] and max(ids) < book_enc.n_vocab
    inputs, targets = collate([ds[i] for i in range(len(ds))], ds.pad_id, mask_prompt=True)
    assert (targets == eot).sum(1).tolist() == [1] * len(ds)  # one end-of-text target each
    assert len(example_losses(book_model, ds)) == len(ds)
    rows = evaluate_instructions(book_model, book_enc, examples)
    assert [r["task"] for r in rows] == [ex["task"] for ex in examples]
    assert all(isinstance(r["prediction"], str) and "<|endoftext|>" not in r["prediction"] for r in rows)


def test_respond_stops_at_the_book_end_of_text(book_enc):
    the = book_enc.encode_ordinary(" the")[0]
    model = _Scripted([the, the, book_enc.eot_token, the])
    model.cfg = GPTConfig(vocab_size=book_enc.n_vocab, context_length=512, d_model=8, n_heads=1,
                          n_layers=1)
    model.n_calls = 0
    assert respond(model, book_enc, "Say something.", max_new_tokens=10, use_cache=False) == "the the"


def test_a_tokenizer_without_end_of_text_is_refused(data):
    class NoEnd:
        def encode(self, text):
            return [1, 2]

    with pytest.raises(ValueError, match="end-of-text"):
        InstructionDataset(data[:2], NoEnd())


def test_sft_splits_take_the_recipe_counts_and_keep_test_apart():
    recipe = dict(SFT_RECIPE, n_per_task=30, train_per_task={"arithmetic": 5, "spam": 7},
                  val_per_task=2, test_per_task=3)
    train, val, test = sft_splits(recipe)
    assert Counter(ex["task"] for ex in train) == {"arithmetic": 5, "spam": 7}
    assert Counter(ex["task"] for ex in val) == {"arithmetic": 2, "spam": 2}
    assert Counter(ex["task"] for ex in test) == {t: 3 for t in TASKS}
    key = lambda ex: (ex["task"], ex["instruction"], ex["input"])
    assert not {key(e) for e in train} & {key(e) for e in val + test}
    assert take_per_task(train, 1) == [next(e for e in train if e["task"] == t)
                                       for t in dict.fromkeys(e["task"] for e in train)]
    assert take_per_task(train, None) == train and take_per_task(train, {"spam": 2}) == \
        [e for e in train if e["task"] == "spam"][:2]
    assert sft_recipe("gpt2")["lr"] < sft_recipe("book")["lr"] == SFT_RECIPE["lr"]
    with pytest.raises(ValueError, match="base"):
        sft_recipe("llama")


def test_counts_per_task(data):
    mixed = build_instruction_dataset(seed=7, n_per_task={"spam": 10, "arithmetic": 30})
    assert [ex["task"] for ex in mixed] == ["spam"] * 10 + ["arithmetic"] * 30  # TASKS order
    assert mixed[10:] == [ex for ex in data if ex["task"] == "arithmetic"]
    assert mixed[:10] == [ex for ex in data if ex["task"] == "spam"][:10]
    with pytest.raises(ValueError, match="positive"):
        build_instruction_dataset(n_per_task={"spam": 0})
    with pytest.raises(ValueError, match="unknown task"):
        build_instruction_dataset(n_per_task={"poetry": 3})


# --- the cached instruction-tuned model for later chapters -----------------------------------------------

TINY_RECIPE = dict(SFT_RECIPE, n_per_task={"arithmetic": 20}, train_per_task=4,
                   val_per_task=2, test_per_task=1, epochs=1, batch_size=4, warmup_steps=1)


def test_finetuned_model_trains_once_then_loads(tmp_path, monkeypatch):
    import gptbook.instruct as instruct

    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(tmp_path))
    path = instruct.finetuned_path("book", TINY_RECIPE)
    assert path.parent == tmp_path and not path.exists()
    model, enc = instruct.finetuned_model("cpu", "book", TINY_RECIPE)
    assert path.exists() and not model.training and enc.eot_token == enc.n_vocab - 1
    calls = []
    monkeypatch.setattr(instruct, "train_sft", lambda *a, **k: calls.append(1))
    again, _ = instruct.finetuned_model("cpu", "book", TINY_RECIPE)  # loaded, not trained
    assert calls == [] and all(torch.equal(a, b) for a, b in
                               zip(model.state_dict().values(), again.state_dict().values()))
    assert instruct.finetuned_path("book", dict(TINY_RECIPE, lr=1e-4)) != path  # keyed by recipe
    with pytest.raises(ValueError, match="another recipe"):
        instruct.load_finetuned(path, recipe=dict(TINY_RECIPE, lr=1e-4))


def test_a_damaged_or_foreign_cache_file_is_refused_and_retrained(tmp_path, monkeypatch):
    import gptbook.instruct as instruct
    from gptbook.base import base_dir

    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(tmp_path))
    with pytest.raises(ValueError, match="not a gptbook instruction-tuned model"):
        instruct.load_finetuned(base_dir() / "model.safetensors")
    path = instruct.finetuned_path("book", TINY_RECIPE)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="safetensors"):
        instruct.load_finetuned(path)
    with pytest.warns(UserWarning, match="fine-tuning again"):
        model, _ = instruct.finetuned_model("cpu", "book", TINY_RECIPE)
    assert isinstance(instruct.load_finetuned(path, recipe=TINY_RECIPE), GPTModel)


def test_later_chapters_find_the_whole_api_in_gptbook_instruct():
    """Chapters 11 and 12 import the instruction set's functions from ``gptbook.instruct``;
    they live in ``gptbook.instruct_data`` and are the same objects."""
    import gptbook.instruct as instruct
    import gptbook.instruct_data as instruct_data

    for name in ("TASKS", "build_instruction_dataset", "split_by_task", "check_answer",
                 "well_formed", "token_f1", "load_alpaca", "save_alpaca", "rhymes"):
        assert getattr(instruct, name) is getattr(instruct_data, name)
    for name in ("format_prompt", "respond", "finetuned_model", "finetune",
                 "InstructionDataset", "evaluate_instructions", "SFT_RECIPE"):
        assert callable(getattr(instruct, name)) or isinstance(getattr(instruct, name), dict)
    assert "torch" not in vars(instruct_data)  # the instruction set needs no torch
