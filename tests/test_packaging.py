"""The installed package: import paths from outside the repository, console script."""

import os
import shutil
import subprocess
import sys


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
