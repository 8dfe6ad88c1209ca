"""One import name: the distribution installs `streamsense` only (streams/, models/ and exporters/ are its
subpackages), so a user's own `models.py` or `streams.py` beside the command cannot shadow or break it."""

import fnmatch
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import streamsense

ROOT = Path(__file__).resolve().parent.parent
USER_MODULES = ("models", "streams", "exporters")


def test_pyproject_maps_every_package_under_streamsense():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, package_dir = setuptools["packages"], setuptools["package-dir"]
    assert all(name == "streamsense" or name.startswith("streamsense.") for name in packages), packages
    assert set(package_dir) <= set(packages) and set(setuptools["package-data"]) <= set(packages)
    # every folder with an __init__.py is listed, and nothing that is not a package
    def folder_of(name: str) -> Path:  # as setuptools resolves it: the longest mapped prefix, then the rest
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in package_dir:
                return ROOT / package_dir[prefix] / Path(*parts[cut:])
        return ROOT / Path(*parts)

    folders = {name: folder_of(name) for name in packages}
    assert all((folder / "__init__.py").is_file() for folder in folders.values()), folders
    listed = {folder.resolve() for folder in folders.values()}
    for folder in folders.values():
        for init in folder.glob("*/**/__init__.py"):
            assert init.parent.resolve() in listed, f"{init.parent} is a package missing from pyproject.toml"
    # every other file in a package folder (rules, samples, migrations, dashboard page, models) is package data
    for name, folder in folders.items():
        patterns = setuptools["package-data"].get(name, [])
        for file in folder.rglob("*"):
            rel = file.relative_to(folder)
            in_subpackage = any((folder / parent).resolve() in listed for parent in rel.parents if parent.parts)
            if file.is_dir() or "__pycache__" in rel.parts or in_subpackage \
                    or (len(rel.parts) == 1 and file.suffix == ".py"):
                continue
            assert any(fnmatch.fnmatch(rel.as_posix(), pattern) for pattern in patterns), \
                f"{folder.name}/{rel} is not package data of {name} in pyproject.toml"


def test_installed_distribution_has_one_top_level_name():
    """What importlib.metadata.packages_distributions() reads for this distribution: its top_level.txt (written
    by every install, editable or not; an egg-info's file list is the source tree's, not what was installed)."""
    dist = importlib.metadata.distribution("streamsense")
    declared = (dist.read_text("top_level.txt") or "").split()
    assert declared == ["streamsense"], declared
    owners = {name for name, dists in importlib.metadata.packages_distributions().items() if "streamsense" in dists}
    assert owners == {"streamsense"}, owners


def test_user_modules_named_like_the_old_packages_do_not_break_classify(tmp_path):
    installed = subprocess.run([sys.executable, "-c", "import streamsense; print(streamsense.__file__)"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, "streamsense is not installed: pip install -e . first"
    assert Path(installed.stdout.strip()).resolve() == Path(streamsense.__file__).resolve(), \
        f"the installed streamsense ({installed.stdout.strip()}) is not this checkout: pip install -e . here"
    for name in USER_MODULES:
        (tmp_path / f"{name}.py").write_text(f'raise ImportError("user module {name}.py imported")\n')
    result = subprocess.run([sys.executable, "-m", "streamsense", "classify"], cwd=tmp_path, capture_output=True,
                            text=True, input='{"id": "a", "text": "I love this"}\n', timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    out = json.loads(lines[0])
    assert out["id"] == "a" and "error" not in out, out


def test_a_checkout_that_is_not_installed_still_imports_the_subpackages():
    """`PYTHONPATH=.` in a plain checkout (the GPU scripts run it so, with no package index there): the folders
    beside streamsense/ resolve as its subpackages, without any install's import hook."""
    code = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
            "import streamsense.streams.pipeline as p, streamsense.models.runtime as r, "
            "streamsense.exporters.parity as e; print(p.__file__, r.__file__, e.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [Path(f).resolve().parent.name for f in out.stdout.split()] == ["streams", "models", "exporters"]
