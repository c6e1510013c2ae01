"""The conda environment.yml and pyproject.toml describe the same environment."""

import os
import re
import shutil
import subprocess
import sys
import venv
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


# pip's messages when the package index cannot be reached (no network), as opposed to a
# requirement that no release satisfies
_UNREACHABLE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


@pytest.mark.slow
def test_the_project_installs_from_a_wheelhouse_into_an_empty_venv_with_the_index_disabled(
    tmp_path,
):
    """docs/CLUSTERS.md's offline install, as written there: `pip download` of pip, wheel and the
    project with its dev extras into a wheelhouse (the login node, with the index as this machine
    has it), then an empty venv (its own bundled pip) upgrades pip and installs the project from
    the wheelhouse alone: `--no-index`, and no pip configuration or find-links of this machine. It
    then imports fer_lib and runs `python -m fer_lib --help`. Measured on a 2-core EPYC
    (2026-12-07), the index on local disk: 2 min 44 s in all (the download about 20 s, 3.3 GB
    with torch's CUDA libraries; the rest the install); the test removes its 10 GB when done."""
    source, wheelhouse = tmp_path / "source", tmp_path / "wheelhouse"
    try:
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy(ROOT / name, source / name)
        shutil.copytree(
            ROOT / "fer_lib", source / "fer_lib", ignore=shutil.ignore_patterns("__pycache__")
        )
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", wheelhouse, "pip", "wheel",
             f"{source}[dev]"],
            capture_output=True, text=True,
        )  # fmt: skip
        if download.returncode and any(word in download.stderr for word in _UNREACHABLE):
            pytest.skip("the package index is not reachable: no wheelhouse to fill")
        assert download.returncode == 0, download.stderr[-3000:]
        offline = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
        offline["PIP_CONFIG_FILE"] = os.devnull  # no configuration file: no index, no find-links
        venv.create(tmp_path / "venv", with_pip=True)
        python = str(tmp_path / "venv" / "bin" / "python")
        for step in (["--upgrade", "pip"], ["-e", f"{source}[dev]"]):
            install = subprocess.run(
                [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheelhouse,
                 *step],
                capture_output=True, text=True, env=offline,
            )  # fmt: skip
            assert install.returncode == 0, install.stderr[-3000:]
        imported = subprocess.run(
            [python, "-c", "import fer_lib; print(fer_lib.__file__)"],
            capture_output=True, text=True, env=offline, cwd=tmp_path,
        )  # fmt: skip
        assert imported.stdout.strip() == str(source / "fer_lib" / "__init__.py"), imported.stderr
        usage = subprocess.run(
            [python, "-m", "fer_lib", "--help"], capture_output=True, text=True, env=offline,
            cwd=tmp_path,
        )  # fmt: skip
        assert usage.returncode == 0 and "run-all" in usage.stdout, usage.stderr
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # 10 GB: not kept as pytest keeps tmp folders
