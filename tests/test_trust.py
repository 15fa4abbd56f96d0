"""Files and flags that can be trusted (issue 11): no loader runs code, damage is refused, an
interrupted run loses nothing, and every nonsensical input is one clear error, not a quiet wrong run.

The inputs of the issue that live in other modules (``temperature=nan`` in ``generate``, token ids
outside the vocabulary in the model, a LoRA adapter loaded onto another base model, a classification
set with a single class) are tested by those modules' own tests.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gptbook import checkpoint, optim, pretrain_data, train
from gptbook.checkpoint import (checkpoint_metadata, clean_stale_temps, convert_checkpoint, convert_main,
                                load_checkpoint, read_checkpoint, save_checkpoint, tensors_sha256)
from gptbook.cli import generate_main, main
from gptbook.data import create_dataloader, encode_to_file, load_tokens, write_tokens
from gptbook.model import GPT_CONFIGS, GPTModel, read_safetensors, write_safetensors
from gptbook.train import Trainer
from gptbook.train_config import TrainConfig

SMALL = dict(model="tiny", d_model=16, n_heads=2, n_layers=1, context_length=16, batch_size=2, max_steps=2,
             lr=1e-2, warmup_steps=1, eval_interval=0, eval_batches=1, device="cpu", dtype="float32", seed=7)
ROOT = Path(__file__).resolve().parents[1]


def _argv(files, out, *extra) -> list[str]:
    return ["--data", str(files[0]), "--val-data", str(files[1]), "--d-model", "16", "--n-heads", "2",
            "--n-layers", "1", "--context-length", "16", "--batch-size", "2", "--max-steps", "2",
            "--warmup-steps", "1", "--eval-interval", "0", "--eval-batches", "1", "--device", "cpu",
            "--out-dir", str(out), "--no-progress", *map(str, extra)]


class Trap:
    """Unpickling this calls ``open(marker, "w")``: a harmless stand-in for any code an attacker wants run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def env(tmp_path):
    """Token files, a real checkpoint, and a gallery of files that are not what they claim to be."""
    rng = np.random.default_rng(0)
    files = (tmp_path / "train.tok", tmp_path / "val.tok")
    write_tokens(rng.integers(0, 500, 3000), files[0], 50257, tokenizer="gpt2")
    write_tokens(rng.integers(0, 500, 600), files[1], 50257, tokenizer="gpt2")
    trainer = Trainer(TrainConfig(**SMALL, data=str(files[0]), val_data=str(files[1]), out_dir=str(tmp_path / "run")))
    trainer.fit(progress=False)
    e = {"tmp": tmp_path, "files": files, "ckpt": trainer.save(tmp_path / "ck"), "marker": tmp_path / "PWNED"}
    e["notes"] = tmp_path / "notes.txt"
    e["notes"].write_text("Four score and seven years ago our fathers brought forth on this continent\n" * 20)
    e["empty"] = tmp_path / "empty.bin"
    e["empty"].write_bytes(b"")
    e["random"] = tmp_path / "random.bin"
    e["random"].write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    e["old"] = tmp_path / "old.pt"  # the old checkpoint format: a torch.save pickle, here with a trap
    torch.save({"format": "gptbook-checkpoint-1", "model": Trap(e["marker"])}, e["old"])
    e["bare"] = tmp_path / "bare.pkl"
    e["bare"].write_bytes(pickle.dumps({"model": Trap(e["marker"])}, protocol=2))
    blob = bytearray(e["ckpt"].read_bytes())
    blob[-3] ^= 0x04  # one flipped bit in the last tensor
    e["flipped"] = tmp_path / "flipped.safetensors"
    e["flipped"].write_bytes(bytes(blob))
    e["cut"] = tmp_path / "cut.safetensors"
    e["cut"].write_bytes(e["ckpt"].read_bytes()[:-100])
    e["nan"] = _forged(e["ckpt"], tmp_path / "nan.safetensors", nan=True)
    e["list_json"] = tmp_path / "list.json"
    e["list_json"].write_text('[{"lr": 0.001}]')
    e["typed_json"] = tmp_path / "typed.json"
    e["typed_json"].write_text('{"lr": "fast"}')
    e["unknown_json"] = tmp_path / "unknown.json"
    e["unknown_json"].write_text('{"learning_rate": 0.1}')
    e["a_file"] = tmp_path / "a_file"
    e["a_file"].write_text("a file where a folder should be")
    e["cut_tokens"] = tmp_path / "cut.tok"
    e["cut_tokens"].write_bytes(files[0].read_bytes()[:-7])
    e["wide_tokens"] = tmp_path / "wide.tok"
    write_tokens([1, 2, 3] * 100, e["wide_tokens"], 60000, tokenizer="gpt2")
    e["book_tokens"] = tmp_path / "book.tok"
    encode_to_file(["My fellow citizens, " * 50], e["book_tokens"], pretrain_data.load_tokenizer("book"))
    return e


def _forged(src: Path, dst: Path, nan: bool = False, state: Path | None = None) -> Path:
    """A copy of checkpoint ``src`` rewritten the way an attacker would: digests updated to match."""
    _, meta = checkpoint._read_header(src)
    tensors = {k: v.clone() for k, v in read_safetensors(src).items()}
    if nan:
        tensors["tok_emb.weight"][0, 0] = float("nan")
    meta["tensors_sha256"] = tensors_sha256(tensors)
    if state is not None:
        import hashlib
        meta["state_sha256"] = hashlib.sha256(state.read_bytes()).hexdigest()
        meta["state"] = state.name
    return write_safetensors(tensors, dst, meta)


def _train(e, *extra):
    return main(_argv(e["files"], e["tmp"] / "out", *extra))


def _gen(e, *argv):
    return generate_main([*map(str, argv), "--max-new-tokens", "2"])


# (id, what to run, expected message). Each must end in ONE line that says what is wrong.
NONSENSE = [
    ("data: a text file", lambda e: main(_argv((e["notes"], e["notes"]), e["tmp"] / "o")), "is not a gptbook token file"),
    ("data: an empty file", lambda e: main(_argv((e["empty"], e["files"][1]), e["tmp"] / "o")), "is not a gptbook token file"),
    ("data: a truncated token file", lambda e: main(_argv((e["cut_tokens"], e["files"][1]), e["tmp"] / "o")), "truncated or damaged"),
    ("data: ids of a larger vocabulary", lambda e: main(_argv((e["wide_tokens"], e["files"][1]), e["tmp"] / "o")), "vocabulary of 60,000 tokens, more than"),
    ("data: another tokenizer's ids", lambda e: main(_argv((e["book_tokens"], e["files"][1]), e["tmp"] / "o")), "was tokenized with bpe"),
    ("data: an unknown corpus", lambda e: _train(e, "--data", "sotu,wikipedia"), "unknown corpus 'wikipedia'"),
    ("tokenizer: unknown", lambda e: _train(e, "--tokenizer", "gpt3"), "neither 'gpt2', 'book'"),
    ("--lr inf", lambda e: _train(e, "--lr", "inf"), "lr must be a positive finite number, got inf"),
    ("--lr nan", lambda e: _train(e, "--lr", "nan"), "lr must be a positive finite number, got nan"),
    ("--lr -1", lambda e: _train(e, "--lr", "-1"), "lr must be a positive finite number"),
    ("--lr 1e6", lambda e: _train(e, "--lr", "1e6", "--max-steps", "30", "--save-interval", "1"), "training diverged"),
    ("--grad-clip -1", lambda e: _train(e, "--grad-clip", "-1"), "grad_clip must be 0 (no clipping) or a positive"),
    ("--grad-clip inf", lambda e: _train(e, "--grad-clip", "inf"), "grad_clip must be 0 (no clipping)"),
    ("--beta2 1", lambda e: _train(e, "--beta2", "1"), "beta2 must be at least 0 and below 1"),
    ("--weight-decay -0.1", lambda e: _train(e, "--weight-decay", "-0.1"), "weight_decay must be 0 or a positive"),
    ("--min-lr-ratio 2", lambda e: _train(e, "--min-lr-ratio", "2"), "min_lr_ratio must be between 0 and 1"),
    ("--dropout 1", lambda e: _train(e, "--dropout", "1"), "dropout must be at least 0 and below 1"),
    ("--max-steps 0", lambda e: _train(e, "--max-steps", "0"), "max_steps must be at least 1"),
    ("--warmup-steps -5", lambda e: _train(e, "--warmup-steps", "-5"), "warmup_steps must be 0 or more"),
    ("--attn-impl flash", lambda e: _train(e, "--attn-impl", "flash"), "attn_impl must be fused or naive"),
    ("--config: a JSON list", lambda e: _train(e, "--config", e["list_json"]), "must hold a JSON object"),
    ("--config: not JSON", lambda e: _train(e, "--config", e["notes"]), "is not valid JSON"),
    ("--config: a wrong type", lambda e: _train(e, "--config", e["typed_json"]), "option lr must be a number, got 'fast'"),
    ("--config: an unknown option", lambda e: _train(e, "--config", e["unknown_json"]), "unknown training option(s): learning_rate"),
    ("--out-dir: not writable", lambda e: _train(e, "--out-dir", e["a_file"] / "run"), "cannot write checkpoints to --out-dir"),
    ("--resume: a text file", lambda e: main(["--resume", str(e["notes"])]), "is not a gptbook checkpoint"),
    ("--resume: an empty file", lambda e: main(["--resume", str(e["empty"])]), "is empty, not a gptbook checkpoint"),
    ("--resume: random bytes", lambda e: main(["--resume", str(e["random"])]), "is not a gptbook checkpoint"),
    ("--resume: an old pickle", lambda e: main(["--resume", str(e["old"])]), "is a pickle"),
    ("--resume: a flipped bit", lambda e: main(["--resume", str(e["flipped"])]), "is corrupt"),
    ("--resume: a truncated file", lambda e: main(["--resume", str(e["cut"])]), "does not fit the file"),
    ("--resume: NaN weights", lambda e: main(["--resume", str(e["nan"])]), "not finite"),
    ("--resume: the state file", lambda e: main(["--resume", str(next(e["tmp"].glob("ck.state-*.pt")))]), "is the training state"),
    ("--resume: nothing to train", lambda e: main(["--resume", str(e["ckpt"]), "--max-steps", "2"]), "nothing to train"),
    ("--resume: another tokenizer", lambda e: main(["--resume", str(e["ckpt"]), "--tokenizer", "book", "--max-steps", "4"]), "was trained with the tokenizer"),
    ("--resume with --preset", lambda e: main(["--resume", str(e["ckpt"]), "--preset", "quick"]), "cannot be combined with --resume"),
    ("--resume: another shape", lambda e: main(["--resume", str(e["ckpt"]), "--d-model", "32", "--max-steps", "4"]), "another shape: d_model=16"),
    ("generate: a text file", lambda e: _gen(e, e["notes"]), "is not a gptbook checkpoint"),
    ("generate: random bytes", lambda e: _gen(e, e["random"]), "is not a gptbook checkpoint"),
    ("generate: an old pickle", lambda e: _gen(e, e["old"]), "is a pickle"),
    ("generate: a bare pickle", lambda e: _gen(e, e["bare"]), "is a pickle"),
    ("generate: a flipped bit", lambda e: _gen(e, e["flipped"]), "is corrupt"),
    ("generate: NaN weights", lambda e: _gen(e, e["nan"]), "not finite"),
    ("generate: a missing file", lambda e: _gen(e, e["tmp"] / "nowhere.safetensors"), "does not exist"),
    ("generate: --temperature nan", lambda e: _gen(e, e["ckpt"], "--temperature", "nan"), "--temperature must be a finite number"),
    ("generate: --temperature -1", lambda e: _gen(e, e["ckpt"], "--temperature", "-1"), "--temperature must be"),
    ("generate: --top-p 0", lambda e: _gen(e, e["ckpt"], "--top-p", "0"), "--top-p must be in (0, 1]"),
    ("generate: --top-k 0", lambda e: _gen(e, e["ckpt"], "--top-k", "0"), "--top-k must be at least 1"),
    ("generate: a convert that is no pickle", lambda e: _gen(e, e["notes"], "--trust-checkpoint"), "is not a pickle checkpoint"),
]


@pytest.mark.parametrize("run, message", [pytest.param(r, m, id=i) for i, r, m in NONSENSE])
def test_nonsense_is_one_clear_error(env, run, message):
    with pytest.raises(SystemExit) as err:
        run(env)
    text = str(err.value.code)
    assert text.startswith(("gptbook-train: error:", "gptbook-generate: error:")), text
    assert message in text and "\n" not in text and "Traceback" not in text
    assert not env["marker"].exists()
    for path in (env["tmp"] / "out").glob("*.safetensors"):  # whatever was saved loads, finite
        read_checkpoint(path)


API_NONSENSE = [
    ("create_dataloader: a str naming no file", lambda e: create_dataloader("nowhere.tok", max_length=4), FileNotFoundError, "does not exist"),
    ("create_dataloader: a str naming a text file", lambda e: create_dataloader(str(e["notes"]), max_length=4), ValueError, "not a gptbook token file"),
    ("load_tokens: a text file", lambda e: load_tokens(e["notes"]), ValueError, "not a gptbook token file"),
    ("TrainConfig: a JSON list", lambda e: TrainConfig.from_dict([{"lr": 1e-3}]), TypeError, "not a list"),
    ("TrainConfig: lr inf", lambda e: TrainConfig(lr=float("inf")), ValueError, "lr must be a positive finite number"),
    ("TrainConfig: grad_clip -1", lambda e: TrainConfig(grad_clip=-1.0), ValueError, "grad_clip must be 0"),
    ("TrainConfig: max_steps 2.5", lambda e: TrainConfig(max_steps=2.5), TypeError, "option max_steps must be int"),
    ("read_checkpoint: a text file", lambda e: read_checkpoint(e["notes"]), ValueError, "not a gptbook checkpoint"),
    ("read_checkpoint: an empty file", lambda e: read_checkpoint(e["empty"]), ValueError, "is empty"),
    ("read_checkpoint: random bytes", lambda e: read_checkpoint(e["random"]), ValueError, "not a gptbook checkpoint"),
    ("read_checkpoint: a safetensors that is no checkpoint", lambda e: read_checkpoint(write_safetensors({"w": torch.ones(2)}, e["tmp"] / "w.safetensors")), ValueError, "not a gptbook checkpoint (format None)"),
    ("load_checkpoint: an old pickle", lambda e: load_checkpoint(e["old"]), ValueError, "is a pickle"),
    ("load_checkpoint: a flipped bit", lambda e: load_checkpoint(e["flipped"]), ValueError, "is corrupt"),
    ("load_checkpoint: NaN weights", lambda e: load_checkpoint(e["nan"]), ValueError, "not finite"),
    ("save_checkpoint: NaN weights", lambda e: save_checkpoint(e["tmp"] / "n", _nan_model()), ValueError, "not finite"),
    ("save_checkpoint: an object in the state", lambda e: save_checkpoint(e["tmp"] / "o", _nan_model(False), metrics={"m": object()}), TypeError, "stores only tensors"),
    ("convert_checkpoint without trust", lambda e: convert_checkpoint(e["old"]), ValueError, "pass trust=True"),
]


def _nan_model(nan: bool = True) -> GPTModel:
    model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=32, d_model=8, n_heads=2, n_layers=1))
    if nan:
        with torch.no_grad():
            model.blocks[0].ff.fc.weight[0, 0] = float("nan")
    return model


@pytest.mark.parametrize("run, kind, message", [pytest.param(r, k, m, id=i) for i, r, k, m in API_NONSENSE])
def test_api_nonsense_is_one_clear_error(env, run, kind, message):
    with pytest.raises(kind) as err:
        run(env)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not env["marker"].exists()
    assert not list(env["tmp"].glob(".*tmp*"))


def test_a_diverging_run_saves_nothing(env):
    out = env["tmp"] / "out"
    with pytest.raises(SystemExit, match="training diverged"):
        _train(env, "--lr", "1e6", "--max-steps", "30", "--save-interval", "1", "--out-dir", out)
    for path in out.glob("*.safetensors"):  # a save before the divergence must hold finite weights
        assert all(torch.isfinite(t).all() for t in read_checkpoint(path)["model"].values())
    with pytest.raises(ValueError, match="not finite"):
        model = _nan_model()
        save_checkpoint(out / "nan", model)
    assert not (out / "nan.safetensors").exists() and not list(out.glob(".*tmp*"))


def test_resume_with_changed_schedule_is_honoured_and_reported(env, capsys):
    trainer = main(["--resume", str(env["ckpt"]), "--max-steps", "6", "--lr", "5e-3", "--warmup-steps", "3",
                    "--data", str(env["files"][0]), "--val-data", str(env["files"][1]), "--out-dir",
                    str(env["tmp"] / "more"), "--no-progress"])
    out = capsys.readouterr().out
    assert "resumed with changes:" in out and "max_steps 2 -> 6" in out and "lr 0.01 -> 0.005" in out
    schedule = optim.WarmupCosine(3, 6, 0.1)
    assert dict(zip(trainer.history["step"], trainer.history["lr"]))[6] == pytest.approx(5e-3 * schedule(5))
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(5e-3 * schedule(6))
    stored = read_checkpoint(env["tmp"] / "more" / "final.safetensors")
    assert stored["train_config"]["max_steps"] == 6 and stored["scheduler"]["lr_lambdas"][0]["max_steps"] == 6


# ---------------------------------------------------------------- no loader runs a pickle
def test_no_loader_runs_a_malicious_pickle(env, monkeypatch):
    from gptbook.base import export_base

    ck = env["ckpt"]
    state = next(env["tmp"].glob("ck.state-*.pt"))
    swapped = env["tmp"] / "swapped"  # a real checkpoint whose state file was replaced by the trap
    swapped.mkdir()
    for f in (ck, state):
        (swapped / f.name).write_bytes(f.read_bytes())
    torch.save({"format": "gptbook-checkpoint-2", "optimizer": Trap(env["marker"])}, swapped / state.name)
    forged_state = env["tmp"] / f"forged.state-{'a' * 12}.pt"  # ...and the digest forged to match
    torch.save({"format": "gptbook-checkpoint-2", "optimizer": Trap(env["marker"])}, forged_state)
    forged = _forged(ck, env["tmp"] / "forged.safetensors", state=forged_state)
    bad = {"old": (env["old"], "is a pickle"), "bare": (env["bare"], "is a pickle"),
           "swapped": (swapped / ck.name, "is corrupt or was changed"),
           "forged": (forged, "cannot be loaded as plain data")}
    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(env["tmp"] / "cache"))
    for name, (path, message) in bad.items():
        state_loaders = [lambda p: read_checkpoint(p), lambda p: Trainer.resume(p),
                         lambda p: Trainer(TrainConfig(**SMALL, data=str(env["files"][0]),
                                                       val_data=str(env["files"][1]))).load_state(p),
                         lambda p: export_base(p, folder=env["tmp"] / "export")]
        weight_loaders = [lambda p: load_checkpoint(p), lambda p: checkpoint_metadata(p)]
        for load in state_loaders + (weight_loaders if name in ("old", "bare") else []):
            with pytest.raises(ValueError, match=message):
                load(path)
        with pytest.raises(SystemExit, match=message):
            main(["--resume", str(path)])
        if name in ("old", "bare"):
            with pytest.raises(SystemExit, match=message):
                generate_main([str(path)])
            with pytest.raises(SystemExit, match="pass trust=True"):
                convert_main([str(path)])
        assert not env["marker"].exists(), f"a loader ran the pickle of {name}"
    # the two command lines as programs, as a user runs them
    for argv in (["gptbook.cli", "--resume", str(env["old"])], ["gptbook.train", "--resume", str(forged)],
                 ["gptbook.checkpoint", str(env["old"])]):
        out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=600)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    gen = subprocess.run([sys.executable, "-c", "from gptbook.cli import generate_cli; generate_cli()",
                          str(env["old"])], capture_output=True, text=True, timeout=600)
    assert gen.returncode == 1 and "is a pickle" in gen.stderr and len(gen.stderr.strip().splitlines()) == 1
    assert not env["marker"].exists()


def test_pretrained_tiny_does_not_run_a_planted_pickle(env, monkeypatch):
    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(env["tmp"] / "cache"))
    monkeypatch.setattr(train, "prepare_corpus", lambda *a, **k: env["files"])
    monkeypatch.setattr(train, "TINY_SOTU", TrainConfig(**{**train.TINY_SOTU.to_dict(), "max_steps": 1, "tokenizer": "gpt2",
                                                           "eval_batches": 1}))
    path = train.tiny_checkpoint_path()
    path.write_bytes(env["old"].read_bytes())  # someone planted a pickle where the cache is
    with pytest.warns(UserWarning, match="is a pickle"):
        model = train.pretrained_tiny()  # refused, and trained again instead
    assert not env["marker"].exists() and isinstance(model, GPTModel)
    assert read_checkpoint(path)["step"] == 1


def test_an_old_checkpoint_converts_only_when_trusted(tmp_path, capsys):
    """The old format, made the old way (torch.save with NumPy's RNG state), converts exactly."""
    files = (tmp_path / "t.tok", tmp_path / "v.tok")
    write_tokens(np.arange(800) % 300, files[0], 50257, tokenizer="gpt2")
    write_tokens(np.arange(200) % 300, files[1], 50257, tokenizer="gpt2")
    trainer = Trainer(TrainConfig(**SMALL, data=str(files[0]), val_data=str(files[1])))
    trainer.fit(progress=False)
    old_rng = train._rng_state(trainer.data_gen)
    old_rng["numpy"] = np.random.get_state()  # as the old format stored them
    old_rng["python"] = __import__("random").getstate()
    old = {"format": "gptbook-checkpoint-1", "model_config": trainer.raw_model.cfg.to_dict(),
           "model": trainer.raw_model.state_dict(), "step": 2, "optimizer": trainer.optimizer.state_dict(),
           "scheduler": trainer.scheduler.state_dict(), "scaler": trainer.scaler.state_dict(),
           "train_config": trainer.cfg.to_dict(), "rng": old_rng, "history": trainer.history}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="pass trust=True"):
        convert_checkpoint(tmp_path / "old.pt")
    new = convert_main([str(tmp_path / "old.pt"), "--trust-checkpoint"])
    assert new == tmp_path / "old.safetensors" and "converted" in capsys.readouterr().out
    state = read_checkpoint(new)
    assert state["step"] == 2 and state["train_config"] == trainer.cfg.to_dict()
    assert all(torch.equal(state["model"][k], v) for k, v in trainer.raw_model.state_dict().items())
    resumed = Trainer.resume(new, max_steps=4)
    assert resumed.step == 2 and np.random.get_state()[1].tolist() == old_rng["numpy"][1].tolist()


# ---------------------------------------------------------------- nothing lost
KILL_SCRIPT = """
import os, sys, torch
from pathlib import Path
import gptbook.checkpoint as ck
from gptbook.model import GPT_CONFIGS, GPTModel

point, folder = sys.argv[1], Path(sys.argv[2])
model = GPTModel(GPT_CONFIGS["tiny"].with_(vocab_size=64, d_model=16, n_heads=2, n_layers=1))
opt = torch.optim.AdamW(model.parameters())
ck.save_checkpoint(folder / "ck", model, optimizer=opt, step=1)  # the checkpoint that must survive
torch.nn.init.normal_(model.tok_emb.weight)
fsyncs, real_fsync, real_replace = [], os.fsync, os.replace

def fsync(fd):  # the first fsync is the new state file's, the second the new weights'
    fsyncs.append(fd)
    if (point, len(fsyncs)) in (("writing state", 1), ("writing weights", 2)):
        os._exit(9)  # the process is killed with the file half done
    real_fsync(fd)

def replace(src, dst):
    if point == "before commit" and str(dst).endswith(".safetensors"):
        os._exit(9)
    real_replace(src, dst)
    if point == "after commit" and str(dst).endswith(".safetensors"):
        os._exit(9)

os.fsync, os.replace = fsync, replace
ck.save_checkpoint(folder / "ck", model, optimizer=opt, step=2)
"""


@pytest.mark.parametrize("point, step", [("writing state", 1), ("writing weights", 1), ("before commit", 1),
                                         ("after commit", 2)])
def test_a_save_killed_at_any_point_leaves_a_loadable_checkpoint(tmp_path, point, step):
    out = subprocess.run([sys.executable, "-c", KILL_SCRIPT, point, str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 9, out.stderr
    assert read_checkpoint(tmp_path / "ck.safetensors")["step"] == step  # the old one, or the new one whole
    clean_stale_temps(tmp_path)  # what every training run does first
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0] == "ck.safetensors" and names[1].startswith("ck.state-"), names
    assert read_checkpoint(tmp_path / "ck.safetensors")["step"] == step


def test_a_failed_save_cleans_up_after_itself(tmp_path, monkeypatch):
    model = _nan_model(False)
    first = save_checkpoint(tmp_path / "ck", model, step=1, history={"loss": [1.0]})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_safetensors", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path / "ck", model, step=2, history={"loss": [1.0, 0.5]})
    assert read_checkpoint(first)["step"] == 1 and read_checkpoint(first)["history"] == {"loss": [1.0]}
    assert len(list(tmp_path.iterdir())) == 2 and not list(tmp_path.glob(".*"))


def _start(argv, out_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gptbook.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_for(path: Path, proc, timeout=600):
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < timeout
        time.sleep(0.05)


def test_ctrl_c_saves_an_interrupted_checkpoint_that_resumes(env):
    out = env["tmp"] / "run-int"
    proc = _start(_argv(env["files"], out, "--max-steps", "100000", "--save-interval", "5"), out)
    _wait_for(out / "last.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    path = out / "interrupted.safetensors"
    assert f"resume with: gptbook-train --resume {path}" in stderr
    step = read_checkpoint(path)["step"]
    assert step >= 5 and not list(out.glob(".*"))
    resumed = main(["--resume", str(path), "--max-steps", str(step + 2), "--no-progress"])
    assert resumed.step == step + 2 and (out / "final.safetensors").exists()


def test_a_killed_run_keeps_its_last_checkpoint(env):
    out = env["tmp"] / "run-kill"
    proc = _start(_argv(env["files"], out, "--max-steps", "100000", "--save-interval", "1"), out)
    _wait_for(out / "last.safetensors", proc)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: maybe in the middle of a save
    proc.communicate(timeout=60)
    step = read_checkpoint(out / "last.safetensors")["step"]
    assert step >= 1
    main(["--resume", str(out / "last.safetensors"), "--max-steps", str(step + 1), "--no-progress",
          "--save-interval", "0"])
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")], names  # stale temporary files removed at start
    assert len([n for n in names if ".state-" in n]) == 2  # one for last, one for final


def test_default_cli_run_saves_periodically(env):
    from gptbook.cli import CLI_DEFAULTS

    out = env["tmp"] / "run-default"
    main(_argv(env["files"], out, "--max-steps", CLI_DEFAULTS["save_interval"] + 1))  # no --save-interval
    assert read_checkpoint(out / "last.safetensors")["step"] == CLI_DEFAULTS["save_interval"]
    assert read_checkpoint(out / "final.safetensors")["step"] == CLI_DEFAULTS["save_interval"] + 1


# ---------------------------------------------------------------- the command line a newcomer meets
def test_help_explains_data_and_lists_the_choices(monkeypatch):
    from gptbook.cli import build_parser

    monkeypatch.setenv("COLUMNS", "2000")  # no line breaks inside the lists of choices
    text = " ".join(build_parser().format_help().split())
    for needle in ("--preset {base,quick,tiny}", "about a minute", "sotu,austen,kjv,moby_dick",
                   "token file", "{auto,float32,bfloat16,float16}", "{fused,naive}", "{gpt2,book,PATH}",
                   ",".join(GPT_CONFIGS), "interrupted.safetensors"):
        assert needle in text, needle


def test_console_scripts_point_at_functions_that_exist():
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"gptbook-train", "gptbook-generate"}
    for target in scripts.values():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_caches_go_to_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("GPTBOOK_CHECKPOINTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrain_data.checkpoints_dir() == tmp_path / "xdg" / "gptbook"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrain_data.checkpoints_dir() == tmp_path / "home" / ".cache" / "gptbook"
    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(tmp_path / "mine"))
    assert pretrain_data.checkpoints_dir() == tmp_path / "mine"


def test_token_caches_are_keyed_and_rebuilt(tmp_path, monkeypatch):
    calls = []
    real = pretrain_data.pretraining_documents

    def counted(*args, **kwargs):
        calls.append(args)
        train_docs, val_docs = real(*args, **kwargs)
        return train_docs[:3], val_docs[:2]  # a few speeches keep the test fast

    monkeypatch.setattr(pretrain_data, "pretraining_documents", counted)
    train_path, val_path = pretrain_data.prepare_corpus("sotu", folder=tmp_path)
    key = pretrain_data.corpus_key(["sotu"], 2001, "gpt2")
    assert key in train_path.name and len(calls) == 1
    assert pretrain_data.prepare_corpus("sotu", folder=tmp_path) == (train_path, val_path) and len(calls) == 1
    blob = train_path.read_bytes()
    train_path.write_bytes(blob[: len(blob) - 10])  # a crash left the cache short
    assert pretrain_data.prepare_corpus("sotu", folder=tmp_path)[0].read_bytes() == blob and len(calls) == 2
    assert pretrain_data.corpus_key(["sotu"], 2001, "book") != key  # another tokenizer: another cache
    assert pretrain_data.corpus_key(["sotu"], 1990, "gpt2") != key


def test_quick_preset_beats_the_unigram_baseline(tmp_path, monkeypatch):
    """The preset a newcomer meets learns visibly: its validation loss ends clearly below the unigram's."""
    from gptbook.cli import PRESETS

    monkeypatch.setenv("GPTBOOK_CHECKPOINTS", str(tmp_path / "cache"))
    trainer = main(["--preset", "quick", "--out-dir", str(tmp_path / "quick"), "--no-progress",
                    "--sample-interval", "0"])
    val = trainer.history["val_loss"][-1]
    unigram = pretrain_data.unigram_loss(trainer.train_tokens, trainer.val_tokens, trainer.model_config.vocab_size)
    assert trainer.step == PRESETS["quick"]["max_steps"]
    assert val < unigram - 0.5, (val, unigram)


def test_a_plain_pip_install_ships_the_data(tmp_path):
    """``pip install .`` (not editable) builds a wheel that holds every data file the sums list."""
    import shutil
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gptbook", src / "gptbook", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", src / "data")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    names = set(zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist())
    from gptbook.corpora import read_sums

    shipped = {f"gptbook_data/{name}" for name in read_sums(ROOT / "data")} | {"gptbook_data/SHA256SUMS"}
    assert shipped <= names and "gptbook/cli.py" in names and "gptbook/checkpoint.py" in names
