"""`pip install .` into a fresh virtual environment gives a working agecheck, away from the clone.

Nothing is downloaded: the new venv sees this interpreter's installed dependencies through a .pth
file, and pip builds the project with `--no-build-isolation --no-deps --no-index`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.app_support import EXAMPLE_PHOTO
from tests.conftest import REPO_ROOT

# What never goes into a build: tools, data and caches (the copy keeps the test from writing build/ into the clone).
NOT_BUILT = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    "tests",
    "bench",
    "docs",
    "runs",
    "outputs",
    "feedback_data",
    ".gradio",
    ".cache",
    ".whl",
    ".carry",
)


def _run(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGE_MODEL", "VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install .` done into it; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("install")
    source = root / "agecheck-src"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*NOT_BUILT))
    env_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
    python = env_dir / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root
    ).stdout.strip()
    Path(purelib, "_dependencies_from_test_runner.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(source)], cwd=root
    )
    shutil.rmtree(source)  # the installed package must not need its source
    return env_dir / "bin"


def test_installed_package_predicts_from_any_folder_with_the_shipped_model(installed: Path, tmp_path: Path):
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    shutil.copy(EXAMPLE_PHOTO, elsewhere / "shopper.jpg")
    result = _run([str(installed / "agecheck-predict"), "--json", "shopper.jpg"], cwd=elsewhere)
    record = json.loads(result.stdout.splitlines()[0])
    assert record["faces"], record
    assert 10 < record["faces"][0]["age"] < 90

    where = _run(
        [
            str(installed / "python"),
            "-c",
            (
                "import json, age_model, age_model.resources as r, age_model.cards as c, age_model.faces as f\n"
                "from age_model.metrics import load_age_error\n"
                "m = load_age_error().compute(predictions=[30.0], references=[32.0], threshold=25.0)\n"
                "print(json.dumps({'package': age_model.__file__, 'model': str(r.DEFAULT_MODEL), 'examples': "
                "str(r.EXAMPLES_DIR),"
                " 'templates': str(c.TEMPLATES_DIR), 'yunet': str(f.YUNET_PATH), 'mae': m['mae']}))"
            ),
        ],
        cwd=elsewhere,
    )
    paths = json.loads(where.stdout)
    prefix = str(installed.parent)
    for name in ("package", "model", "examples", "templates", "yunet"):
        assert paths[name].startswith(prefix), (name, paths[name])
    assert paths["mae"] == pytest.approx(2.0)
    assert (Path(paths["model"]) / "config.json").is_file() and list(Path(paths["examples"]).glob("*.jpg"))


def test_installed_package_renders_cards_and_lists_every_subpackage(installed: Path, tmp_path: Path):
    script = (
        "import sys, age_model.cards as c\n"
        "print(c.model_card_for_run(c.TEMPLATES_DIR.parent / 'default_model').content[:200])\n"
    )
    card = _run([str(installed / "python"), "-c", script], cwd=tmp_path).stdout
    assert "library_name: transformers" in card
    package = Path(
        _run(
            [str(installed / "python"), "-c", "import age_model; print(age_model.__file__)"], cwd=tmp_path
        ).stdout.strip()
    ).parent
    in_repo = {p.parent.relative_to(REPO_ROOT) for p in (REPO_ROOT / "age_model").rglob("__init__.py")}
    missing = sorted(str(p) for p in in_repo if not (package.parent / p / "__init__.py").is_file())
    assert not missing, f"add these packages to pyproject.toml's [tool.setuptools] packages: {missing}"


@pytest.mark.parametrize("command", ["agecheck-app", "agecheck-train"])
def test_console_scripts_start(installed: Path, tmp_path: Path, command: str):
    result = _run([str(installed / command), "--help"], cwd=tmp_path)
    assert f"usage: {command}" in result.stdout
