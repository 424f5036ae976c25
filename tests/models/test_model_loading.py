"""Loading generators and segmenters for real, offline: folders, cache, a download from a local HTTP server."""

from __future__ import annotations

import shutil
import socket
import threading
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from pytorch_pretrained_biggan import BigGAN
from torchvision.models import get_model

from silhouette_lightning.core.errors import UsageError, WeightsError
from silhouette_lightning.models import fetch
from silhouette_lightning.models.biggan import (
    BIGGAN_NAMES,
    CONFIG_NAME,
    WEIGHTS_NAME,
    biggan_urls,
    build_random_generator,
    default_cache_dir,
    load_generator,
    pretrained_config,
    resolve_generator_dir,
    save_generator,
    tiny_biggan_config,
)
from silhouette_lightning.models.frozen import is_frozen
from silhouette_lightning.models.segmenters import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SEGMENTER_NAMES,
    SegmenterEnsemble,
    load_ensemble,
    load_segmenter,
    parse_ensemble_spec,
    preprocess,
    segmenter_weights_path,
)

TINY_NAME = "tiny-biggan"


# ---------------------------------------------------------------- fixtures


@dataclass
class Served:
    """A folder served over HTTP on 127.0.0.1, and the paths requested so far."""

    root: Path
    base_url: str
    requests: list[str]
    stop: Callable[[], None]


def _serve(handler_class: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, Callable[[], None]]:
    """Start `handler_class` on a free port in a thread; return the server and an idempotent stop."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop() -> None:
        if not stopped:
            stopped.append(True)
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    return server, stop


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[Served]:
    """Serve `tmp_path/served` and record every GET."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server, stop = _serve(Handler)
    yield Served(root, f"http://127.0.0.1:{server.server_address[1]}", requests, stop)
    stop()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens, so a request fails at once (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def tiny_generator() -> BigGAN:
    return build_random_generator(tiny_biggan_config(), seed=0)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TORCH_HOME; torch.hub's folder follows it (an explicit `set_dir` would win, so clear it)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download fail at once with URLError; return the URLs that were tried."""
    tried: list[str] = []

    def refuse(request, *args, **kwargs):
        tried.append(request.full_url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(fetch, "urlopen", refuse)
    return tried


def _generate(model: BigGAN, seed: int = 1) -> torch.Tensor:
    """A deterministic batch of 2 images from `model`."""
    config = model.config
    z = torch.randn(2, config.z_dim, generator=torch.Generator().manual_seed(seed))
    classes = torch.nn.functional.one_hot(torch.tensor([0, 3]), config.num_classes).float()
    with torch.no_grad():
        return model(z, classes, 0.5)  # [2, 3, 32, 32]


# ---------------------------------------------------------------- BigGAN from a folder


def test_save_then_load_gives_same_frozen_generator(tiny_generator: BigGAN, tmp_path: Path) -> None:
    folder = save_generator(tiny_generator, tmp_path / "gen")
    loaded = load_generator(str(folder))
    assert is_frozen(loaded)
    assert torch.equal(_generate(loaded), _generate(tiny_generator))
    # Loading used the folder, so nothing went to the cache.
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_legacy_checkpoint_format_loads(tiny_generator: BigGAN, tmp_path: Path) -> None:
    # The published BigGAN files predate torch's zip format.
    folder = save_generator(tiny_generator, tmp_path / "gen")
    torch.save(tiny_generator.state_dict(), folder / WEIGHTS_NAME, _use_new_zipfile_serialization=False)
    assert torch.equal(_generate(load_generator(folder)), _generate(tiny_generator))


def test_missing_key_is_a_weights_error(tiny_generator: BigGAN, tmp_path: Path) -> None:
    folder = save_generator(tiny_generator, tmp_path / "gen")
    state = tiny_generator.state_dict()
    del state["generator.bn.weight"]
    torch.save(state, folder / WEIGHTS_NAME)
    with pytest.raises(WeightsError, match=r"generator\.bn\.weight") as info:
        load_generator(folder)
    assert str(folder / WEIGHTS_NAME) in str(info.value)


def test_truncated_weights_file_is_a_weights_error(tiny_generator: BigGAN, tmp_path: Path) -> None:
    folder = save_generator(tiny_generator, tmp_path / "gen")
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as info:
        load_generator(folder)
    assert str(folder / WEIGHTS_NAME) in str(info.value)


def test_folder_without_weights_names_the_missing_file(tiny_generator: BigGAN, tmp_path: Path) -> None:
    folder = save_generator(tiny_generator, tmp_path / "gen")
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(WeightsError, match=WEIGHTS_NAME):
        resolve_generator_dir(folder)


def test_unknown_name_is_a_usage_error_listing_the_names(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        resolve_generator_dir("biggan-deep-1024", cache_dir=tmp_path)
    assert all(name in str(info.value) for name in BIGGAN_NAMES)


# ---------------------------------------------------------------- BigGAN from the cache / a download


def test_cache_dir_and_urls_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SILHOUETTE_CACHE", raising=False)
    monkeypatch.delenv("SILHOUETTE_BIGGAN_URL", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "silhouette_lightning"
    assert biggan_urls("biggan-deep-256") == (
        "https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-256-pytorch_model.bin",
        "https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-256-config.json",
    )
    monkeypatch.setenv("SILHOUETTE_CACHE", str(tmp_path))
    monkeypatch.setenv("SILHOUETTE_BIGGAN_URL", "http://mirror.example/biggan/")
    assert default_cache_dir() == tmp_path
    assert biggan_urls("x")[0] == "http://mirror.example/biggan/x-pytorch_model.bin"


def test_download_once_then_load_offline_from_cache(
    tiny_generator: BigGAN, file_server: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = save_generator(tiny_generator, tmp_path / "published")
    shutil.copy(source / WEIGHTS_NAME, file_server.root / f"{TINY_NAME}-pytorch_model.bin")
    shutil.copy(source / CONFIG_NAME, file_server.root / f"{TINY_NAME}-config.json")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SILHOUETTE_BIGGAN_URL", file_server.base_url)
    monkeypatch.setenv("SILHOUETTE_CACHE", str(cache))

    first = load_generator(TINY_NAME, names=[TINY_NAME])
    assert sorted(file_server.requests) == [f"/{TINY_NAME}-config.json", f"/{TINY_NAME}-pytorch_model.bin"]
    folder = cache / "biggan" / TINY_NAME
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary files left

    file_server.stop()
    second = load_generator(TINY_NAME, names=[TINY_NAME])
    assert len(file_server.requests) == 2
    assert is_frozen(second)
    assert torch.equal(_generate(first), _generate(tiny_generator))
    assert torch.equal(_generate(second), _generate(tiny_generator))


def test_no_network_and_no_cache_says_where_and_what(
    closed_port_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SILHOUETTE_BIGGAN_URL", closed_port_url)
    monkeypatch.setenv("SILHOUETTE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError) as info:
        load_generator("biggan-deep-128")
    message = str(info.value)
    folder = tmp_path / "cache" / "biggan" / "biggan-deep-128"
    assert str(folder) in message
    assert f"{closed_port_url}/biggan-deep-128-config.json" in message
    assert f"{closed_port_url}/biggan-deep-128-pytorch_model.bin" in message
    assert "--generator DIR" in message
    assert not any(folder.iterdir())


def test_missing_file_on_server_leaves_nothing_behind(
    file_server: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The config is served, the weights are not (404): the config stays cached, no weights file appears.
    (file_server.root / f"{TINY_NAME}-config.json").write_text(tiny_biggan_config().to_json_string())
    monkeypatch.setenv("SILHOUETTE_BIGGAN_URL", file_server.base_url)
    with pytest.raises(WeightsError, match="404") as info:
        resolve_generator_dir(TINY_NAME, cache_dir=tmp_path, names=[TINY_NAME])
    assert f"{file_server.base_url}/{TINY_NAME}-pytorch_model.bin" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "biggan" / TINY_NAME).iterdir()) == [CONFIG_NAME]


def test_interrupted_download_never_leaves_the_final_name(tmp_path: Path) -> None:
    class ShortReply(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)  # then the connection closes

        def log_message(self, *args) -> None:
            pass

    server, stop = _serve(ShortReply)
    try:
        dest = tmp_path / "out" / "file.bin"
        with pytest.raises(fetch.DownloadError, match="10 of 1000"):
            fetch.download_file(f"http://127.0.0.1:{server.server_address[1]}/file.bin", dest, timeout=5)
        assert list(dest.parent.iterdir()) == []
    finally:
        stop()


def test_download_checks_the_hash_prefix(file_server: Served, tmp_path: Path) -> None:
    (file_server.root / "a.bin").write_bytes(b"hello")  # sha256 starts with 2cf24dba
    fetch.download_file(f"{file_server.base_url}/a.bin", tmp_path / "ok.bin", sha256_prefix="2cf24dba")
    assert (tmp_path / "ok.bin").read_bytes() == b"hello"
    with pytest.raises(fetch.DownloadError, match="SHA-256"):
        fetch.download_file(f"{file_server.base_url}/a.bin", tmp_path / "bad.bin", sha256_prefix="00000000")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["ok.bin"]


def test_download_progress_is_a_tqdm_bar_for_big_files_only(file_server: Served, tmp_path: Path, capsys) -> None:
    (file_server.root / "big.bin").write_bytes(bytes(5 << 20))
    (file_server.root / "small.bin").write_bytes(b"x" * 1000)
    fetch.download_file(f"{file_server.base_url}/big.bin", tmp_path / "big.bin")
    err = capsys.readouterr().err
    assert f"Downloading {file_server.base_url}/big.bin" in err
    assert "big.bin: 100%" in err and "5.00M/5.00M" in err  # tqdm's bar: name, percentage, sizes in MiB
    fetch.download_file(f"{file_server.base_url}/small.bin", tmp_path / "small.bin")
    assert capsys.readouterr().err == ""
    assert (tmp_path / "big.bin").stat().st_size == 5 << 20


# ---------------------------------------------------------------- random generators


def test_random_tiny_generator_has_a_gradient_wrt_z(tiny_generator: BigGAN) -> None:
    assert is_frozen(tiny_generator)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    classes = torch.nn.functional.one_hot(torch.tensor([1, 2]), 10).float()
    image = tiny_generator(z, classes, 0.5)  # [2, 3, 32, 32]
    assert image.shape == (2, 3, 32, 32)
    assert image.abs().max() < 0.99  # not saturated
    image.square().mean().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().min() > 0


def test_random_generator_depends_only_on_its_seed() -> None:
    state = torch.random.get_rng_state()
    a = build_random_generator(tiny_biggan_config(), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_random_generator(tiny_biggan_config(), seed=3)
    c = build_random_generator(tiny_biggan_config(), seed=4)
    assert torch.equal(_generate(a), _generate(b))
    assert not torch.equal(_generate(a), _generate(c))


def test_published_architectures_have_the_published_sizes() -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        sizes = {name: sum(p.numel() for p in BigGAN(pretrained_config(name)).parameters()) for name in BIGGAN_NAMES}
    assert round(sizes["biggan-deep-128"] / 1e5) == 504  # 50.4M, as published
    assert pretrained_config("biggan-deep-256").output_dim == 256
    assert pretrained_config("biggan-deep-512").output_dim == 512
    assert sizes["biggan-deep-128"] < sizes["biggan-deep-256"] < sizes["biggan-deep-512"]


# ---------------------------------------------------------------- segmenters


def test_segmenter_names_are_the_voc_models() -> None:
    assert set(SEGMENTER_NAMES) == {
        "deeplabv3_resnet101",
        "deeplabv3_resnet50",
        "deeplabv3_mobilenet_v3_large",
        "fcn_resnet101",
        "fcn_resnet50",
        "lraspp_mobilenet_v3_large",
    }


def test_segmenter_loads_offline_from_torch_home(torch_home: Path, no_network: list[str]) -> None:
    reference = get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21)
    path, url = segmenter_weights_path("lraspp_mobilenet_v3_large")
    assert path == torch_home / "hub" / "checkpoints" / "lraspp_mobilenet_v3_large-d234d4ea.pth"
    assert url.endswith("/lraspp_mobilenet_v3_large-d234d4ea.pth")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    segmenter = load_segmenter("lraspp_mobilenet_v3_large")
    assert no_network == []
    assert is_frozen(segmenter)
    loaded = segmenter.model.state_dict()
    assert loaded.keys() == reference.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(segmenter(x), reference.eval()(x)["out"])  # [1, 21, 64, 64]


def test_segmenter_checkpoint_with_aux_head_loads_without_it(torch_home: Path, no_network: list[str]) -> None:
    # The published DeepLabV3/FCN files carry the auxiliary head's weights; it is dropped, not built.
    name = "deeplabv3_mobilenet_v3_large"
    reference = get_model(name, weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path, _ = segmenter_weights_path(name)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    segmenter = load_segmenter(name)
    assert segmenter.model.aux_classifier is None
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in segmenter.model.state_dict().items())


@pytest.mark.parametrize("name", sorted(SEGMENTER_NAMES))
def test_every_segmenter_matches_its_checkpoint_keys_without_aux(name: str) -> None:
    # What torchvision builds for the pretrained weights, minus the aux head, is what load_segmenter builds.
    with torch.device("meta"):
        ours = get_model(name, weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
        extra = {} if name.startswith("lraspp") else {"aux_loss": True}
        theirs = get_model(name, weights=None, weights_backbone=None, num_classes=21, **extra)
    theirs_keys = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("aux_classifier.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs_keys


def test_segmenter_without_file_or_network_says_where_and_what(torch_home: Path, no_network: list[str]) -> None:
    path, url = segmenter_weights_path("lraspp_mobilenet_v3_large")
    with pytest.raises(WeightsError) as info:
        load_segmenter("lraspp_mobilenet_v3_large")
    assert no_network == [url]
    assert str(path.parent) in str(info.value) and url in str(info.value)
    assert not path.exists()


def test_corrupt_segmenter_file_is_a_weights_error(torch_home: Path, no_network: list[str]) -> None:
    path, _ = segmenter_weights_path("lraspp_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(WeightsError, match="delete it") as info:
        load_segmenter("lraspp_mobilenet_v3_large")
    assert str(path) in str(info.value)


def test_unknown_segmenter_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="deeplabv3_resnet101"):
        load_segmenter("deeplab")


# ---------------------------------------------------------------- preprocessing and the ensemble


def test_preprocess_of_a_constant_image_is_the_hand_formula() -> None:
    x = torch.full((2, 3, 20, 30), 0.3)
    out = preprocess(x, 16)
    assert out.shape == (2, 3, 16, 16)
    for channel in range(3):
        expected = (0.3 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        torch.testing.assert_close(out[:, channel], torch.full((2, 16, 16), expected))


def test_preprocess_anti_aliases_when_it_shrinks() -> None:
    # a one-pixel checkerboard: its local mean is 0.5 everywhere; point sampling keeps the pattern instead
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float()
    x = checker.expand(1, 3, 64, 64).clone()
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    seen = preprocess(x, 8) * std + mean  # back to [0, 1]
    assert (seen - 0.5).abs().max() < 0.02, "the aliased checkerboard reached the segmenters"
    resized = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(preprocess(x, 8), (resized - mean) / std)
    # one side shrinking is enough (a 4:3 photo of 12 px to 8 px)
    wide = torch.rand(1, 3, 6, 12, generator=torch.Generator().manual_seed(1))
    resized = torch.nn.functional.interpolate(wide, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(preprocess(wide, 8), (resized - mean) / std)


def test_preprocess_enlarges_bilinearly_without_antialias() -> None:
    # the generated image (BigGAN 128 px) going up to the segmenter size: unchanged, bit for bit
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    resized = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(preprocess(x, 32), (resized - mean) / std)


def test_ensemble_stacks_member_logits_and_normalizes_weights() -> None:
    members = [load_segmenter("lraspp_mobilenet_v3_large", pretrained=False) for _ in range(2)]
    ensemble = SegmenterEnsemble(members, [3.0, 1.0], size=32)
    torch.testing.assert_close(ensemble.weights, torch.tensor([0.75, 0.25]))
    assert "weights" in dict(ensemble.named_buffers())
    assert is_frozen(ensemble)
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        logits = ensemble(x)
        assert logits.shape == (2, 2, 21, 32, 32)
        torch.testing.assert_close(logits[1], members[1](preprocess(x, 32)))


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -0.5], [1.0], [float("nan"), 1.0]])
def test_ensemble_rejects_bad_weights(weights: list[float]) -> None:
    members = [torch.nn.Identity(), torch.nn.Identity()]
    with pytest.raises(UsageError):
        SegmenterEnsemble(members, weights, size=8)


def test_ensemble_spec_parsing() -> None:
    assert parse_ensemble_spec("deeplabv3_resnet101:0.6, fcn_resnet101:0.4") == [
        ("deeplabv3_resnet101", 0.6),
        ("fcn_resnet101", 0.4),
    ]
    assert parse_ensemble_spec("fcn_resnet50") == [("fcn_resnet50", 1.0)]
    for bad in ["", "fcn_resnet50,", "fcn_resnet50:abc", "nope:1", "fcn_resnet50,fcn_resnet50"]:
        with pytest.raises(UsageError):
            parse_ensemble_spec(bad)


def test_load_ensemble_builds_the_members(torch_home: Path, no_network: list[str]) -> None:
    ensemble = load_ensemble("lraspp_mobilenet_v3_large:2", size=16, pretrained=False)
    assert len(ensemble.members) == 1 and ensemble.size == 16
    torch.testing.assert_close(ensemble.weights, torch.tensor([1.0]))
    assert no_network == []


def test_the_segmenter_names_known_without_torchvision_are_its_voc_models():
    from silhouette_lightning.core.names import SEGMENTER_NAMES
    from silhouette_lightning.models.segmenters import voc_segmenter_names

    assert SEGMENTER_NAMES == voc_segmenter_names()
