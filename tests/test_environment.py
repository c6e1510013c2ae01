"""The conda environment.yml and pyproject.toml describe the same environment."""

import tomllib
from pathlib import Path

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
    for package in ("jupyterlab", "torch", "torchvision", "adabelief-pytorch", "matplotlib", "seaborn", "grad-cam", "papermill"):
        assert package in names


def test_the_readme_table_is_the_committed_demo_run():
    """README's Table 6 is copied from the demo run whose digest is committed; they must not drift apart."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    start = readme.index("| model    |   seeds |   oa_top1")
    table = readme[start : readme.index("\n\n", start)]
    assert table in (root / "figures" / "demo" / "RESULTS.md").read_text()
