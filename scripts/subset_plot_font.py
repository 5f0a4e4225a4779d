"""The font embedded in lorafit-train for training_loss.png: DejaVu Sans (Debian's fonts-dejavu-core)
cut down to printable ASCII plus the few symbols the plot prints, with fontTools' subsetter.

    pip install fonttools
    python scripts/subset_plot_font.py [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]

Writes crates/lorafit-train/assets/DejaVuSans-plot.ttf (the DejaVu licence is beside it).
"""

import sys
from pathlib import Path

from fontTools import subset

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
OUT = Path(__file__).resolve().parent.parent / "crates/lorafit-train/assets/DejaVuSans-plot.ttf"

text = "".join(chr(c) for c in range(0x20, 0x7F)) + "–—·×≈…"
opts = subset.Options()
opts.layout_features = ["kern"]
opts.hinting = False
opts.name_IDs = ["*"]  # keep the copyright and licence records
opts.notdef_outline = True
font = subset.load_font(str(SRC), opts)
sub = subset.Subsetter(opts)
sub.populate(text=text)
sub.subset(font)
subset.save_font(font, str(OUT), opts)
print(f"{OUT}: {OUT.stat().st_size} bytes")
