#!/usr/bin/env python3
"""Builds {{name}}.wasm: ``python3 build.py``.

The first run creates ``.venv`` with requirements.txt (the SDK by path,
componentize-py and pytest pinned as the SDK pins them); later runs reuse it
and reinstall only when those requirements change. Then it runs the SDK's
build, ``python -m sluice_sdk.build handler.py -o {{name}}.wasm``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
SDK = Path("{{sdk}}")
OUT = "{{name}}.wasm"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_digest() -> str:
    """The requirements, with the SDK's pins and package metadata they name."""
    digest = hashlib.sha256()
    for f in [
        HERE / "requirements.txt",
        SDK / "guest-sdk/python/requirements-dev.txt",
        SDK / "guest-sdk/python/pyproject.toml",
    ]:
        digest.update(f.read_bytes() if f.is_file() else b"-")
    return digest.hexdigest()


def run(cmd: list[str]) -> None:
    print("> " + " ".join(cmd), file=sys.stderr, flush=True)
    if subprocess.run(cmd, cwd=HERE).returncode != 0:
        sys.exit(f"error: {cmd[0]} {' '.join(cmd[1:3])} failed")


def ensure_venv() -> None:
    stamp = VENV / ".sluice-requirements"
    digest = requirements_digest()
    if venv_python().is_file() and stamp.is_file() and stamp.read_text() == digest:
        return
    if not venv_python().is_file():
        # On Debian and Ubuntu this needs the python3-venv package.
        run([sys.executable, "-m", "venv", str(VENV)])
    run([str(venv_python()), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"])
    stamp.write_text(digest)


def main() -> None:
    if sys.version_info < (3, 10):
        sys.exit("error: Python 3.10 or later is needed")
    if not (SDK / "guest-sdk/python/pyproject.toml").is_file():
        sys.exit(f"error: the Sluice Python SDK is not in {SDK}/guest-sdk/python")
    ensure_venv()
    run([str(venv_python()), "-m", "sluice_sdk.build", "handler.py", "-o", OUT, "--wit", str(SDK / "wit")])


if __name__ == "__main__":
    main()
