"""The bottom layer: errors, atomic files, the run-folder lock, ImageNet and VOC names."""
