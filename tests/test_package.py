"""What a user adopting the package relies on: licence, one version, the console command, the printed config."""

import json
from importlib import metadata
from pathlib import Path

import pytest

import silhouette_lightning

ROOT = Path(__file__).resolve().parent.parent


def test_licence_is_mit_in_the_file_and_the_metadata():
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(ROOT / "pyproject.toml")["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_version_is_written_once_and_packaging_reads_it():
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(ROOT / "pyproject.toml")["project"]  # expands the dynamic version
    assert "version" in project["dynamic"]
    assert project["version"] == silhouette_lightning.__version__


def test_installed_metadata_has_the_same_version():
    try:
        dist = metadata.distribution("silhouette-lightning")
        origin = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except metadata.PackageNotFoundError:
        pytest.skip("the package is not installed")
    if origin != ROOT.as_uri():
        pytest.skip(f"the installed package comes from {origin or 'an archive'}, not this checkout")
    assert dist.version == silhouette_lightning.__version__
