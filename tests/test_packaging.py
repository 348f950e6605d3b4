"""The installed package: import paths from outside the repository, console script."""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_import_paths_from_outside_the_repo(tmp_path):
    code = ("import cwworld, cwworld.data, cwworld.agents, cwworld.envs, cwworld.configs;"
            "print(cwworld.load_config('mmnist').model.deter, len(cwworld.data.load_digits()))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "200 1500"


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("cwworld") or os.path.join(os.path.dirname(sys.executable), "cwworld")
    out = subprocess.run([exe, "presets"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mmnist" in out.stdout.split()


def test_every_shipped_asset_is_in_the_package_data():
    """A `pip install .` (not -e) installs only what package-data names: every asset file must match."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, folder in (("cwworld.data", root / "cwworld" / "data"), ("cwworld.configs", root / "configs")):
        for path in folder.rglob("*"):
            if path.is_file() and ("assets" in path.parts or package == "cwworld.configs") \
                    and path.suffix not in (".py", ".pyc"):
                relative = path.relative_to(folder).as_posix()
                assert any(fnmatch.fnmatch(relative, p) for p in patterns.get(package, [])), relative
