"""Pictures for people, one module per kind: `tensors` (conversion, resizing), `text` (captions),
`compositing` (subject into photo), `grids` (strips, contact sheets, TensorBoard panels), `animation` (GIFs).

Every function works on tensors in the project's conventions (images [3, H, W] and masks [H, W], float in
[0, 1]) and returns a tensor or a PIL image.
"""

from silhouette_lightning.outputs.pictures.animation import progress_gif
from silhouette_lightning.outputs.pictures.compositing import composite, mask_overlay
from silhouette_lightning.outputs.pictures.grids import contact_sheet, strip, tensorboard_panel
from silhouette_lightning.outputs.pictures.tensors import resize_image, to_pil
from silhouette_lightning.outputs.pictures.text import CAPTION_HEIGHT, GAP, label

__all__ = [
    "CAPTION_HEIGHT",
    "GAP",
    "composite",
    "contact_sheet",
    "label",
    "mask_overlay",
    "progress_gif",
    "resize_image",
    "strip",
    "tensorboard_panel",
    "to_pil",
]
