"""The run's contact sheet: one row per source (skipped ones too, saying why), titled by the source, written
in pages of at most `ROWS_PER_PAGE` rows so that a large run stays readable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from silhouette_lightning.core.classes import imagenet_name
from silhouette_lightning.core.files import atomic_save_image
from silhouette_lightning.inputs.target_maps import load_target
from silhouette_lightning.outputs import pictures

ROWS_PER_PAGE = 12
SINGLE_NAME = "contact_sheet.png"


def page_names(pages: int) -> list[str]:
    """`contact_sheet.png` for one page, else `contact_sheet_001.png`, `contact_sheet_002.png`, ..."""
    return [SINGLE_NAME] if pages == 1 else [f"contact_sheet_{i:03d}.png" for i in range(1, pages + 1)]


def write_contact_sheets(
    run_dir: Path, rows: list[dict], plan, photo: Callable[[str], object], *, rows_per_page: int = ROWS_PER_PAGE
) -> list[Path]:
    """Write the pages from the results.csv rows (`plan` gives the order and the target maps; `photo(key)` the
    source photo or None) and remove pages an earlier, larger state of the run left; returns the pages."""
    run_dir = Path(run_dir)
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    sources = sorted(by_source, key=plan.source_order)
    classes = sorted({int(r["class_id"]) for r in rows if r.get("class_id") not in (None, "")}, key=plan.class_order)
    titles = [f"{c} {imagenet_name(c)}" for c in classes]
    pages = [sources[i : i + rows_per_page] for i in range(0, len(sources), rows_per_page)] or [[]]
    written = []
    for name, page in zip(page_names(len(pages)), pages, strict=True):
        headers, cells, notes = [], [], []
        for source in page:
            source_rows = by_source[source]
            skipped = next((r["status"] for r in source_rows if r["status"].startswith("skipped")), None)
            if skipped:
                headers.append(None)
                cells.append([None] * len(classes))
                notes.append(skipped)
                continue
            target = load_target(plan.targets_dir, source)
            image = photo(source)
            headers.append((image if image is not None else target.expand(3, -1, -1), target))
            by_class = {int(r["class_id"]): r for r in source_rows}
            cells.append([_cell(run_dir, by_class.get(c)) for c in classes])
            notes.append(None)
        sheet = pictures.contact_sheet(headers, cells, titles, row_titles=list(page), row_notes=notes)
        written.append(atomic_save_image(sheet, run_dir / name))
    for stale in set(run_dir.glob("contact_sheet*.png")) - set(written):
        stale.unlink(missing_ok=True)
    return written


def _cell(run_dir: Path, row: dict | None):
    """A class cell: the best image with its IoU, the status of a pair without one, or empty."""
    if row is None:
        return None
    if row["status"] != "ok":
        return row["status"].split(":")[0]  # "failed"
    best = run_dir / row["output_dir"] / "best.png"
    if not best.exists():
        return None
    image = pil_to_tensor(Image.open(best).convert("RGB")).float() / 255
    return (image, f"IoU {float(row['best_iou']):.2f}")
