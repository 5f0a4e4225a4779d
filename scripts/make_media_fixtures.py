"""Small image and video files with what Pillow and PyAV (LLaMA-Factory's readers) say about them,
for lorafit-data's header readers (crates/lorafit-data/src/media.rs).

    python3 scripts/make_media_fixtures.py

needs: av, pillow, numpy. Writes crates/lorafit-data/tests/fixtures/media/ (files + expected.json).
"""

import json
import os

import av
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/lorafit-data/tests/fixtures/media")


def write_video(path, w, h, seconds, fps, codec="mpeg4", fmt=None, options=None):
    c = av.open(path, "w", format=fmt, options=options or {})
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for i in range(round(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), (i * 9) % 255, np.uint8), format="rgb24")
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def probe(path):
    c = av.open(path)
    s = c.streams.video[0]
    r = {
        "width": s.width,
        "height": s.height,
        "seconds": float(s.duration * s.time_base) if s.duration else None,
        "frames": s.frames,
        "average_fps": float(s.average_rate) if s.average_rate else None,
    }
    c.close()
    return r


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {"videos": {}, "images": {}}
    videos = {
        "moov_at_end.mp4": dict(w=64, h=48, seconds=2, fps=10),
        "faststart.mp4": dict(w=48, h=64, seconds=3, fps=8, options={"movflags": "faststart"}),
        "ntsc.mov": dict(w=32, h=32, seconds=1, fps=30000 / 1001, fmt="mov"),
        "clip.avi": dict(w=40, h=30, seconds=2.5, fps=12, fmt="avi"),
    }
    for name, v in videos.items():
        path = os.path.join(OUT, name)
        from fractions import Fraction
        fps = Fraction(v["fps"]).limit_denominator(1001)
        write_video(path, v["w"], v["h"], v["seconds"], fps, fmt=v.get("fmt"), options=v.get("options"))
        expected["videos"][name] = probe(path)
    rgb = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    for name, kw in {
        "a.png": {},
        "a.jpg": {"quality": 80},
        "progressive.jpg": {"quality": 70, "progressive": True},
        "a.gif": {},
        "a.bmp": {},
        "lossy.webp": {"quality": 50},
        "lossless.webp": {"lossless": True},
    }.items():
        path = os.path.join(OUT, name)
        img.save(path, **kw)
        with Image.open(path) as im:
            expected["images"][name] = list(im.size)
    # A WebP with an alpha channel is written as VP8X.
    path = os.path.join(OUT, "alpha.webp")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(path, quality=60)
    with Image.open(path) as im:
        expected["images"]["alpha.webp"] = list(im.size)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(json.dumps(expected))


if __name__ == "__main__":
    main()
