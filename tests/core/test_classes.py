"""Tests for silhouette_lightning.core.classes: ImageNet and VOC classes from what a user types."""

from __future__ import annotations

import pytest

from silhouette_lightning.core.classes import (
    IMAGENET_CLASSES,
    VOC_CLASSES,
    imagenet_name,
    parse_class_list,
    resolve_imagenet_classes,
    resolve_voc_class,
    voc_name,
)
from silhouette_lightning.core.errors import UsageError


def test_class_lists_match_the_project_conventions() -> None:
    assert len(IMAGENET_CLASSES) == 1000
    assert len(VOC_CLASSES) == 21
    assert (VOC_CLASSES[0], VOC_CLASSES[3], VOC_CLASSES[8], VOC_CLASSES[12]) == ("__background__", "bird", "cat", "dog")
    assert (imagenet_name(207), imagenet_name(281)) == ("golden retriever", "tabby")
    assert voc_name(12) == "dog"


@pytest.mark.parametrize(
    "item", [207, "207", " 207 ", "+207", "golden retriever", "Golden Retriever", "GOLDEN_retriever"]
)
def test_imagenet_ids_and_names_in_any_case(item: str | int) -> None:
    assert resolve_imagenet_classes([item]) == [207]


def test_imagenet_order_is_kept_and_repeats_dropped() -> None:
    assert resolve_imagenet_classes(["tabby", 207, "207", "Tabby", 0]) == [281, 207, 0]
    assert resolve_imagenet_classes([]) == []


@pytest.mark.parametrize("item", [1000, "1000", -1, "-1"])
def test_imagenet_id_out_of_range(item: str | int) -> None:
    with pytest.raises(UsageError, match="out of range; ids run from 0 to 999"):
        resolve_imagenet_classes([item])


def test_imagenet_rejects_bool_and_empty() -> None:
    with pytest.raises(UsageError, match="id or a name"):
        resolve_imagenet_classes([True])
    with pytest.raises(UsageError, match="empty"):
        resolve_imagenet_classes(["  "])


def test_imagenet_unknown_name_suggests_close_spellings() -> None:
    with pytest.raises(UsageError, match=r"^unknown ImageNet class 'tabbby'; did you mean: tabby\b.*\?$"):
        resolve_imagenet_classes(["tabbby"])


def test_imagenet_unknown_name_suggests_names_containing_it() -> None:
    with pytest.raises(UsageError) as info:
        resolve_imagenet_classes(["retriever"])
    message = str(info.value)
    for name in ("golden retriever", "Labrador retriever", "flat-coated retriever"):
        assert name in message
    with pytest.raises(UsageError) as info:
        resolve_imagenet_classes(["cat"])
    # whole-word matches come first: "tiger cat" is a better hint than "polecat"
    assert str(info.value).index("tiger cat") < str(info.value).index("polecat")


def test_imagenet_unknown_name_without_any_hint() -> None:
    with pytest.raises(UsageError, match="give an id from 0 to 999"):
        resolve_imagenet_classes(["qqqqqq"])


def test_imagenet_ambiguous_name_lists_the_ids() -> None:
    # torchvision names both the corgi (264) and the sweater (474) "cardigan", differing only in case
    assert IMAGENET_CLASSES[264].lower() == IMAGENET_CLASSES[474].lower() == "cardigan"
    for spelling in ("cardigan", "Cardigan", "CARDIGAN"):
        with pytest.raises(UsageError, match=r"ambiguous; use the id instead: 264 \(Cardigan\) or 474 \(cardigan\)"):
            resolve_imagenet_classes([spelling])
    assert resolve_imagenet_classes([264, "474"]) == [264, 474]


def test_every_unambiguous_imagenet_name_round_trips() -> None:
    lowered = [name.lower() for name in IMAGENET_CLASSES]
    unique = [i for i, name in enumerate(lowered) if lowered.count(name) == 1]
    assert len(unique) >= 998
    assert resolve_imagenet_classes([IMAGENET_CLASSES[i] for i in unique]) == unique


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('207,"tabby",golden retriever', ["207", "tabby", "golden retriever"]),
        (' 1 , "a, b" ,, ', ["1", "a, b"]),
        ("crane bird", ["crane bird"]),
        ("", []),
        ("a\nb", ["a", "b"]),
    ],
)
def test_parse_class_list(text: str, expected: list[str]) -> None:
    assert parse_class_list(text) == expected


def test_parse_then_resolve() -> None:
    assert resolve_imagenet_classes(parse_class_list('207,"tabby", Golden Retriever')) == [207, 281]


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("dog", 12),
        ("DOG", 12),
        ("dogs", 12),
        ("cats", 8),
        ("bus", 6),
        ("buses", 6),
        ("plant", 16),
        ("Potted plant", 16),
        ("potted_plant", 16),
        ("tv", 20),
        ("TVs", 20),
        ("monitor", 20),
        ("motorcycle", 14),
        ("airplane", 1),
        ("plane", 1),
        ("table", 11),
        ("dining table", 11),
        ("couch", 18),
        ("settee", 18),
    ],
)
def test_voc_names_and_synonyms(name: str, index: int) -> None:
    assert resolve_voc_class(name) == index


@pytest.mark.parametrize("name", ["__background__", "background", "Background"])
def test_voc_background_is_not_a_subject(name: str) -> None:
    with pytest.raises(UsageError, match="is not a subject"):
        resolve_voc_class(name)


def test_voc_unknown_name_suggests_and_lists_subjects() -> None:
    with pytest.raises(UsageError, match=r"unknown VOC class 'dgo'; did you mean: dog\?.*subjects are: aeroplane"):
        resolve_voc_class("dgo")
    with pytest.raises(UsageError, match=r"unknown VOC class 'kitten'; subjects are: .*tvmonitor$"):
        resolve_voc_class("kitten")


def test_name_lookups_reject_out_of_range() -> None:
    with pytest.raises(UsageError):
        imagenet_name(1000)
    with pytest.raises(UsageError):
        voc_name(21)
    with pytest.raises(UsageError):
        voc_name(-1)


def test_the_class_lists_are_torchvisions():
    """The package's copies of the class names (read without torch) are torchvision's weight metadata."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.segmentation import DeepLabV3_ResNet101_Weights

    from silhouette_lightning.core.classes import IMAGENET_CLASSES, VOC_CLASSES

    assert IMAGENET_CLASSES == list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    assert VOC_CLASSES == list(DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])
