"""report.html: self-contained (every picture embedded), every link resolves inside the run, and it renders."""

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from test_convergence import synthetic_records

from silhouette_lightning.outputs.convergence import write_convergence
from silhouette_lightning.outputs.plots import write_plots
from silhouette_lightning.outputs.records import RESULT_COLUMNS, write_csv
from silhouette_lightning.outputs.report import write_report


class Resources(HTMLParser):
    """Every `src` and `href` of a page."""

    def __init__(self):
        super().__init__()
        self.sources, self.links, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if tag == "link" or "href" in attrs:
            self.links.append(attrs.get("href", ""))


def check_report(run_dir: Path) -> Resources:
    """Every resource of report.html is embedded and every link is a file or folder of the run."""
    page = Resources()
    page.feed((run_dir / "report.html").read_text(encoding="utf-8"))
    assert page.sources, "the report shows no pictures"
    for src in page.sources:
        assert src.startswith("data:image/png;base64,"), src[:80]
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    for href in page.links:
        assert href and "://" not in href and not href.startswith("/"), href
        target = (run_dir / unquote(href)).resolve()
        assert target.exists(), href
        assert target.is_relative_to(run_dir.resolve()), href
    assert "script" not in page.tags and "iframe" not in page.tags
    return page


def synthetic_run(run_dir: Path) -> Path:
    """A run folder made from synthetic records: convergence files, plots, results.csv, one swap folder."""
    records = synthetic_records()
    rows = write_convergence(run_dir, records, [0.5, 0.75, 0.9])
    write_plots(run_dir, rows)
    results = []
    for r in records:
        if r["restart"] == 0:
            out = f"swaps/{r['source'].replace('/', '__')}/{r['class_id']}"
            results.append(
                {
                    "source": r["source"],
                    "subject": r["subject"],
                    "class_id": r["class_id"],
                    "best_iou": f"{r['iou_history'].max():.6f}",
                    "heldout_iou": "0.25",
                    "status": "ok",
                    "output_dir": out,
                }
            )
    (run_dir / results[0]["output_dir"]).mkdir(parents=True)  # the others' folders do not exist
    write_csv(run_dir / "results.csv", RESULT_COLUMNS, results)
    return write_report(run_dir)


def test_report_is_self_contained_and_links_only_what_exists(tmp_path):
    synthetic_run(tmp_path)
    page = check_report(tmp_path)
    assert len(page.sources) == 3  # the three plots (no contact sheet in this run)
    swap_links = [h for h in page.links if h.startswith("swaps/")]
    assert swap_links == ["swaps/dog__a.png/1/"]  # the folder the results row names (made up here)
    text = (tmp_path / "report.html").read_text()
    assert "golden retriever" in text and "convergence.csv" in text
    assert "mean held-out IoU" in text and "heldout_iou" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium (Debian package) not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    page = synthetic_run(tmp_path / "run")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20, "the rendered page is blank"
    assert (pixels < 100).mean() > 0.01, "no text or plot drawn"
