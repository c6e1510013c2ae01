"""The conda environment.yml and pyproject.toml describe the same environment."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in conda
    assert "-e ." in pip, "environment.yml must install the project itself"
    assert set(pip) - {"-e ."} == wanted


def test_design_card_packages_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0] for d in project["dependencies"]}
    for package in (
        "jupyterlab",
        "torch",
        "torchvision",
        "adabelief-pytorch",
        "matplotlib",
        "seaborn",
        "grad-cam",
        "papermill",
    ):
        assert package in names


def _committed(path: str) -> str:
    """A file as committed at HEAD: the main command rewrites the working
    tree's copy on every run."""
    try:
        return subprocess.run(
            ["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed digest cannot be read")


def test_the_readme_tables_are_the_committed_demo_run():
    """README's tables (Table 6, the models beyond the paper) are copied from the demo run whose
    digest is committed; they must not drift apart. They are compared with the committed digest, so
    a rerun of ./run_all.sh on another CPU does not fail it."""
    readme = (ROOT / "README.md").read_text()
    digest = _committed("figures/demo/RESULTS.md")
    names = re.findall(r"<!-- (\w+):start -->", readme)
    assert {"table6", "future_work"} <= set(names)
    for name in names:
        start, end = readme.index(f"<!-- {name}:start -->"), readme.index(f"<!-- {name}:end -->")
        table = readme[start:end].removeprefix(f"<!-- {name}:start -->").strip()
        assert table.count("\n") >= 3, f"the README's {name} block is empty"
        assert table in digest, name


def test_run_all_uses_a_given_interpreter_as_it_is_and_refuses_one_without_the_project(tmp_path):
    root = ROOT
    env = {**os.environ, "FER_VENV": str(tmp_path / "venv"), "FER_PYTHON": sys.executable}
    command = ["./run_all.sh", "test", "-q", "-p", "no:cacheprovider", "tests/test_layering.py"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "venv").exists()  # nothing built
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    env["FER_PYTHON"] = str(bare / "bin" / "python")
    refused = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "has no fer_lib installed" in refused.stderr
