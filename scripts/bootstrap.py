"""Create .venv and install the pinned dependencies of pyproject.toml into it.

Runs with the system Python (3.11+), so it uses only the standard library. A stamp file holding
the hash of pyproject.toml makes a second run a no-op.
"""

import hashlib
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".gz-installed"


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs with whatever python3 is
        print("GZ Console needs Python 3.11 or newer", file=sys.stderr)
        return 2
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    digest = hashlib.sha256(pyproject).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return 0
    if not (VENV / "bin" / "python").exists():
        print("Creating .venv ...")
        venv.EnvBuilder(with_pip=True).create(VENV)
    project = tomllib.loads(pyproject.decode())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    print(f"Installing {len(requirements)} pinned packages into .venv ...")
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         *requirements],
        check=True,
    )
    STAMP.write_text(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
