"""Put MathJax 3 into _static/mathjax/ so that the book renders equations with no network.

The book's pages load MathJax from ``_static/mathjax/tex-chtml.js`` (see ``_config.yml``). It comes
from the npm registry through ``npm pack`` (pinned version and sha256), once; later runs do nothing.
"""
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
DEST = Path(__file__).resolve().parents[1] / "_static" / "mathjax"


def main() -> None:
    if (DEST / "tex-chtml.js").exists():
        return
    if shutil.which("npm") is None:
        sys.exit("npm is needed once to fetch MathJax for the book (apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        name = subprocess.run(["npm", "pack", f"mathjax@{VERSION}", "--silent"], cwd=tmp, check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        archive = Path(tmp) / name
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            sys.exit(f"mathjax@{VERSION}: sha256 {digest} differs from the pinned {SHA256}")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        DEST.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp) / "package" / "es5", DEST, dirs_exist_ok=True)
    print(f"MathJax {VERSION} -> {DEST}")


if __name__ == "__main__":
    main()
