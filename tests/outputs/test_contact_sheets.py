"""The run's contact sheet: rows titled by source, skipped sources shown with their reason, pages for large runs."""

from conftest import draw_mask, read_csv
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from silhouette_lightning.cli import main
from silhouette_lightning.outputs import pictures
from silhouette_lightning.outputs.pictures import CAPTION_HEIGHT, GAP


def test_pages_titles_and_skipped_rows(cli_args, tmp_path, monkeypatch):
    data = tmp_path / "many" / "dog"
    for i in range(14):
        draw_mask(data / f"m{i:02d}.png", (4 + i % 9, 6, 40, 44 - i % 7))
    (data / "broken.png").write_bytes(b"not a picture")
    calls = []
    original = pictures.contact_sheet

    def spy(headers, cells, titles, **kwargs):
        calls.append((headers, cells, titles, kwargs))
        return original(headers, cells, titles, **kwargs)

    monkeypatch.setattr(pictures, "contact_sheet", spy)
    args = cli_args("--save-images", "best", data=data.parent)
    args[args.index("1,goldfish,3") : args.index("1,goldfish,3") + 1] = ["1"]
    args[args.index("--restarts") + 1] = "1"
    args[args.index("--steps") + 1] = "1"
    assert main(args) == 0
    run = tmp_path / "out" / "run"
    rows = read_csv(run / "results.csv")
    assert len(rows) == 15 and sum(r["status"].startswith("skipped") for r in rows) == 1
    assert not (run / "contact_sheet.png").exists()
    pages = sorted(run.glob("contact_sheet_*.png"))
    assert [p.name for p in pages] == ["contact_sheet_001.png", "contact_sheet_002.png"]
    titles = [t for _, _, _, kwargs in calls for t in kwargs["row_titles"]]
    assert sorted(titles) == sorted(r["source"] for r in rows)  # every source once, the skipped one too
    notes = {t: n for _, _, _, kw in calls for t, n in zip(kw["row_titles"], kw["row_notes"], strict=True)}
    assert notes["dog/broken.png"].startswith("skipped: ") and notes["dog/m00.png"] is None
    cell = 128
    heights = [Image.open(p).height for p in pages]
    assert heights == [CAPTION_HEIGHT + n * cell + (n + 1) * GAP for n in (12, 3)]
    # TensorBoard panels carry a caption bar over (source | target | image | map | composite)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tag = events.Tags()["images"][0]
    panel = events.Images(tag)[-1]
    assert (panel.height, panel.width) == (CAPTION_HEIGHT + 128, 5 * 128)
