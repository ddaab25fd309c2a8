"""Write synthetic captioned shapes as PNG files + captions.csv (an image-captions table).

Used by the MoDE data-experts example (examples/mode_experts_curate.toml):
    python examples/write_shape_captions.py examples/data/shape_captions --n 1500 --sources
--sources mixes three sources (photo, sketch, painting), each with its own look, caption
style and shapes: a pool with real sub-populations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoplat.plugins.datasets.shapes import write_caption_table

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("folder", type=Path, help="where images/ and captions.csv go")
parser.add_argument("--n", type=int, default=1500, help="images (default 1500)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--image-size", type=int, default=32)
parser.add_argument("--sources", action="store_true", help="three sources (sub-populations)")
args = parser.parse_args()
print(write_caption_table(args.folder, args.n, args.seed, args.image_size, sources=args.sources))
