"""Subject swapping with BigGAN and segmentation networks: `python train.py --help`."""

import sys

from silhouette_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
