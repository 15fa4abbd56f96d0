"""The training loop: loss, schedule, FLOPs, checkpoints that resume exactly, the command line."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptbook import train
from gptbook.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from gptbook.cli import generate_main, main
from gptbook.data import write_tokens
from gptbook.model import GPT_CONFIGS, GPTModel
from gptbook.flops import flops_per_token
from gptbook.loss import lm_loss
from gptbook.optim import WarmupCosine
from gptbook.pretrain_data import unigram_loss
from gptbook.train import Trainer
from gptbook.train_config import TrainConfig

SMALL = dict(model="tiny", d_model=16, n_heads=2, n_layers=1, context_length=16, batch_size=2,
             max_steps=6, lr=1e-2, warmup_steps=2, eval_interval=3, eval_batches=1, device="cpu",
             dtype="float32", seed=7)


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(0)
    # a stream with structure (a repeated phrase) so the loss has something to learn
    base = rng.integers(0, 500, size=40)
    stream = np.concatenate([base if i % 2 else rng.integers(0, 500, size=40) for i in range(60)])
    return stream[:2000].astype(np.uint16), stream[2000:].astype(np.uint16)


def test_lm_loss_is_mean_negative_log_likelihood():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(2, 5, 11, generator=gen), torch.randint(0, 11, (2, 5), generator=gen)
    probs = logits.softmax(-1)
    nll = -torch.log(probs.gather(-1, targets[..., None])).mean()
    torch.testing.assert_close(lm_loss(logits, targets), nll)
    torch.testing.assert_close(lm_loss(logits, targets), F.cross_entropy(logits.transpose(1, 2), targets))


def test_warmup_cosine():
    s = WarmupCosine(warmup_steps=10, max_steps=110, min_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55) and s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    values = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        WarmupCosine(-1, 10)


def test_flops_per_token_counts_matrices():
    cfg = GPT_CONFIGS["gpt2-small"]
    one = cfg.with_(n_layers=1, vocab_size=1000)
    n = sum(p.numel() for name, p in GPTModel(one).named_parameters() if p.dim() == 2 and "pos_emb" not in name)
    assert flops_per_token(one) == 6 * n + 12 * cfg.context_length * cfg.d_model
    assert flops_per_token(cfg) / 1e6 == pytest.approx(6 * 123.5 + 12 * 12 * 1024 * 768 / 1e6, rel=0.01)


def test_unigram_loss():
    assert unigram_loss([0, 1, 1, 1], [1], vocab_size=2) == pytest.approx(-math.log(4 / 6))


def test_training_lowers_the_loss(tokens):
    trainer = Trainer(TrainConfig(**SMALL), *tokens)
    before = trainer.evaluate()
    history = trainer.fit(progress=False, log_interval=1)
    assert history["step"] == list(range(1, 7)) and history["eval_step"] == [3, 6]
    assert history["val_loss"][-1] < before - 0.3
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(SMALL["lr"] * 0.1)


def test_resume_gives_the_same_losses(tokens, tmp_path):
    cfg = TrainConfig(**{**SMALL, "dropout": 0.1})  # dropout: the torch RNG must be restored too
    straight = Trainer(cfg, *tokens)
    straight.fit(progress=False, log_interval=1)

    first = Trainer(cfg, *tokens)
    first.fit(steps=3, progress=False, log_interval=1)
    path = first.save(tmp_path / "half.pt")
    torch.manual_seed(12345)  # disturb every RNG; the checkpoint must restore them
    np.random.seed(1)
    second = Trainer(cfg, *tokens)
    second.load_state(path)
    assert second.step == 3
    second.fit(progress=False, log_interval=1)
    assert second.history["step"] == straight.history["step"]
    np.testing.assert_allclose(second.history["loss"], straight.history["loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(second.history["val_loss"], straight.history["val_loss"], rtol=0, atol=1e-6)
    for p, q in zip(second.raw_model.parameters(), straight.raw_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_resume_refuses_another_shape(tokens, tmp_path):
    path = Trainer(TrainConfig(**SMALL), *tokens).save(tmp_path / "a.pt")
    other = Trainer(TrainConfig(**{**SMALL, "d_model": 32}), *tokens)
    with pytest.raises(ValueError, match="another shape: d_model=16"):
        other.load_state(path)


def test_save_and_load_checkpoint(tmp_path):
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=50, d_model=8, n_heads=2))
    path = save_checkpoint(tmp_path / "m.pt", model, step=5, metrics={"val_loss": 1.0})
    assert path == tmp_path / "m.safetensors"
    again = load_checkpoint(path)
    assert not again.training and again.cfg == model.cfg
    idx = torch.randint(0, 50, (1, 9))
    torch.testing.assert_close(again(idx), model.eval()(idx))
    assert read_checkpoint(path)["metrics"] == {"val_loss": 1.0}
    assert again.out_head.weight is again.tok_emb.weight  # tying survives the round trip
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


def test_config_checks():
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="gpt5")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    assert TrainConfig(pad_vocab=True).model_config().vocab_size == 50304


def _files(tmp_path, tokens):
    train_file = tmp_path / "train.tok"
    val_file = tmp_path / "val.tok"
    write_tokens(tokens[0], train_file, 50257, tokenizer="gpt2")
    write_tokens(tokens[1], val_file, 50257, tokenizer="gpt2")
    return str(train_file), str(val_file)


def _cli(tmp_path, train_file, val_file):
    return ["--data", train_file, "--val-data", val_file, "--d-model", "16", "--n-heads", "2",
            "--n-layers", "1", "--context-length", "16", "--batch-size", "2", "--eval-interval", "2",
            "--eval-batches", "1", "--out-dir", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]


def test_cli_trains_resumes_and_generates(tmp_path, tokens, capsys):
    train_file, val_file = _files(tmp_path, tokens)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"max_steps": 2, "lr": 0.01}))
    trainer = main(_cli(tmp_path, train_file, val_file) + ["--config", str(config)])
    assert trainer.step == 2 and trainer.cfg.lr == 0.01
    final = tmp_path / "run" / "final.safetensors"
    resumed = main(["--resume", str(final), "--max-steps", "4", "--no-progress"])
    assert resumed.step == 4 and resumed.cfg.d_model == 16
    capsys.readouterr()
    text = generate_main([str(final), "--prompt", "Hello", "--max-new-tokens", "5"])
    assert text.startswith("Hello") and capsys.readouterr().out.strip() == text


@pytest.mark.parametrize("change, message", [
    (["--data", "nowhere.u16"], "data file nowhere.u16 does not exist"),
    (["--d-model", "30", "--n-heads", "4"], "d_model (30) must be divisible by n_heads (4)"),
    (["--device", "cuda"], "'cuda' was asked for but is not available"),
    (["--dtype", "float8"], "dtype must be"),
])
def test_cli_errors_are_one_line(tmp_path, tokens, change, message):
    if "--device" in change and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = _cli(tmp_path, *_files(tmp_path, tokens)) + change
    with pytest.raises(SystemExit) as err:
        main(args)
    text = str(err.value.code)
    assert text.startswith("gptbook-train: error:") and message in text and "\n" not in text


def test_cli_refuses_checkpoint_of_another_shape(tmp_path, tokens):
    files = _files(tmp_path, tokens)
    path = Trainer(TrainConfig(**SMALL), *tokens).save(tmp_path / "a.pt")
    with pytest.raises(SystemExit) as err:
        main(["--resume", str(path), "--d-model", "32", "--data", files[0], "--val-data", files[1]])
    assert "another shape" in str(err.value.code) and "\n" not in str(err.value.code)
    with pytest.raises(SystemExit) as err:
        generate_main([str(tmp_path / "missing.pt")])
    assert "does not exist" in str(err.value.code)


def test_pretrained_tiny_is_cached(tmp_path, monkeypatch, tokens):
    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(tmp_path))
    files = _files(tmp_path, tokens)  # small token files instead of tokenizing the speeches
    monkeypatch.setattr(train, "prepare_corpus", lambda *a, **k: files)
    monkeypatch.setattr(train, "TINY_SOTU", TrainConfig(**{**train.TINY_SOTU.to_dict(), "max_steps": 2, "tokenizer": "gpt2",
                                                           "eval_batches": 1}))
    first = train.pretrained_tiny()
    files = list(tmp_path.glob("tiny-sotu-*.safetensors"))
    assert len(files) == 1 and "metrics" in read_checkpoint(files[0])
    second = train.pretrained_tiny()
    assert first is not second
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)


def test_fused_linear_cross_entropy_matches_the_plain_loss():
    from gptbook.loss import fused_linear_cross_entropy
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 7, 8, generator=gen, requires_grad=True)
    w = torch.randn(50, 8, generator=gen, requires_grad=True)
    y = torch.randint(0, 50, (3, 7), generator=gen)
    plain = lm_loss(h @ w.T, y)
    for chunk in (4, 512):  # chunks that do not divide 21 positions; one chunk for all
        fused = fused_linear_cross_entropy(h, w, y, chunk=chunk)
        torch.testing.assert_close(fused, plain)
        for scale in (2.0, 1.0):  # a scaled loss (gradient accumulation), and loss.backward()
            (g_h, g_w) = torch.autograd.grad(scale * fused, (h, w), retain_graph=True)
            (r_h, r_w) = torch.autograd.grad(scale * plain, (h, w), retain_graph=True)
            torch.testing.assert_close(g_h, r_h)
            torch.testing.assert_close(g_w, r_w)


def test_module_entry_point_gives_a_one_line_error():
    import subprocess
    import sys
    for module in ("gptbook.train", "gptbook.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--d-model", "30", "--n-heads", "4"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 1
        assert out.stderr.strip() == "gptbook-train: error: d_model (30) must be divisible by n_heads (4)"


def test_resume_honours_a_changed_schedule(tokens, tmp_path):
    first = Trainer(TrainConfig(**{**SMALL, "max_steps": 4, "eval_interval": 0}), *tokens)
    first.fit(progress=False, log_interval=1)
    path = first.save(tmp_path / "four")
    new = dict(max_steps=8, lr=5e-3, warmup_steps=3, min_lr_ratio=0.2, weight_decay=0.05, beta2=0.9)
    resumed = Trainer.resume(path, **new)
    assert resumed.step == 4 and resumed.resumed_changes["max_steps"] == (4, 8)
    resumed.fit(progress=False, log_interval=1)
    schedule = WarmupCosine(3, 8, 0.2)
    assert resumed.history["lr"][4:] == pytest.approx([5e-3 * schedule(k) for k in range(4, 8)], rel=1e-12)
    # the lr at step 4 is the one a run configured like this from the start would use
    fresh = Trainer(TrainConfig(**{**SMALL, **new, "eval_interval": 0}), *tokens)
    fresh.fit(steps=4, progress=False, log_interval=1)
    assert fresh.scheduler.get_last_lr() == pytest.approx([5e-3 * schedule(4)] * 2)
    groups = resumed.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and all(g["betas"] == (0.9, 0.9) for g in groups)
    state = read_checkpoint(resumed.save(tmp_path / "eight"))
    assert state["train_config"]["max_steps"] == 8
    assert state["scheduler"]["lr_lambdas"][0] == {"warmup_steps": 3, "max_steps": 8, "min_ratio": 0.2}


def test_checkpoint_is_safetensors_plus_a_plain_state_file(tokens, tmp_path):
    from safetensors.torch import load_file

    trainer = Trainer(TrainConfig(**{**SMALL, "max_steps": 2}), *tokens)
    trainer.fit(progress=False)
    path = trainer.save(tmp_path / "ck")
    weights = load_file(path)  # the safetensors library reads our weights file
    expected = trainer.raw_model.state_dict()
    assert set(weights) == set(expected) - {"out_head.weight"}  # the tied head is stored once
    assert all(torch.equal(weights[k], expected[k]) for k in weights)
    state_files = list(tmp_path.glob("ck.state-*.pt"))
    assert len(state_files) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors", state_files[0].name]
    state = torch.load(state_files[0], weights_only=True)  # plain data: the restricted unpickler suffices
    assert {"optimizer", "scheduler", "rng", "history"} <= set(state)
    # saving again replaces the state file: no stale one is left behind
    trainer.fit(steps=3, progress=False)
    trainer.save(tmp_path / "ck")
    assert len(list(tmp_path.glob("ck.state-*.pt"))) == 1 and read_checkpoint(path)["step"] == 3
