"""The package's one import rule (pyproject's [tool.importlinter]): a module imports only from its own layer or the
layers below, and the modules of a layer import each other without cycles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports(project: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package found first on the path from `project` (its pyproject holds the contracts)."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = os.environ | {"PYTHONPATH": str(project)}
    return subprocess.run([exe, "--no-cache"], cwd=project, capture_output=True, text=True, timeout=120, env=env)


def test_the_package_keeps_its_layers():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_is_caught(tmp_path):
    """The check can fail: in a copy of the package where `core` imports `engine`, the layers contract breaks."""
    shutil.copytree(ROOT / "silhouette_lightning", tmp_path / "silhouette_lightning")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "silhouette_lightning" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom silhouette_lightning.engine import module  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "silhouette_lightning.core.errors -> silhouette_lightning.engine.module" in result.stdout


def test_the_code_is_linted_and_formatted():
    """`ruff check` and `ruff format --check` pass (pyproject's [tool.ruff]: the formatter is on everywhere)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-1000:]}"
