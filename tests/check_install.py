"""Install checks, each in a throw-away virtual environment.

    python tests/check_install.py

1. A fresh ``pip install .`` (isolated build, Cython fetched by pip) must use
   the compiled modules, and the core tests must pass against the installed
   package.
2. ``pip install .`` where Cython cannot be had must still install, fall back
   to the pure-Python twins, and pass the core tests on them.

The source is copied from the files git knows (tracked, or new and not
ignored), so in-place build products of the developer tree never leak in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_DEPS = ["pytest>=8", "hypothesis>=6.100"]
# Installed by hand where Cython must stay out (the install itself runs --no-deps).
RUNTIME_DEPS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:])
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return proc


def copy_source(dest: Path) -> Path:
    files = run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT).stdout.split()
    src = dest / "src"
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    return src


def make_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    py = path / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    return py


def core_tests(py: Path, src: Path, work: Path, env: dict[str, str]) -> None:
    """Run tests/core against the installed package, away from the source tree."""
    shutil.copytree(src / "tests", work / "tests")
    shutil.copytree(src / "docs", work / "docs")  # the reference pages are tested too
    proc = run([str(py), "-m", "pytest", "tests/core", "-q", "-p", "no:cacheprovider"],
               cwd=work, env=env)
    print(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("YZCORE_")}
    with tempfile.TemporaryDirectory(prefix="yz-install-") as tmp:
        tmp_path = Path(tmp)
        src = copy_source(tmp_path)

        print("== fresh `pip install .` uses the compiled modules")
        py = make_venv(tmp_path / "compiled")
        run([str(py), "-m", "pip", "install", "--quiet", str(src), *TEST_DEPS], env=base_env)
        run([str(py), "-c", "import sys, yzcore; sys.exit(0 if yzcore.USE_EXTENSIONS else "
             "'a fresh install did not use the compiled modules')"], cwd=tmp_path, env=base_env)
        core_tests(py, src, tmp_path / "run-compiled", base_env)

        print("== `pip install .` without Cython falls back to the twins")
        py = make_venv(tmp_path / "twins")
        run([str(py), "-m", "pip", "install", "--quiet", "setuptools>=69", *RUNTIME_DEPS, *TEST_DEPS])
        probe = subprocess.run([str(py), "-c", "import Cython"], capture_output=True)
        if probe.returncode == 0:
            raise SystemExit("Cython is importable in the no-Cython environment; the check would prove nothing")
        proc = run([str(py), "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", str(src)],
                   env=base_env)
        if "installing the pure-Python twins" not in proc.stdout + proc.stderr:
            raise SystemExit("the install did not report its fallback to the twins")
        run([str(py), "-c", "import sys, yzcore; sys.exit(1 if yzcore.USE_EXTENSIONS else 0)"],
            cwd=tmp_path, env=base_env)
        core_tests(py, src, tmp_path / "run-twins", {**base_env, "YZCORE_NO_EXTENSIONS": "1"})
    print("install checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
