"""Image and video tokens as LLaMA-Factory expands them, for lorafit-core's vision tests.

Runs LLaMA-Factory's own multimodal plugins (`qwen2_vl` for Qwen2-VL / Qwen2.5-VL, `qwen3_vl` for
Qwen3-VL / Qwen3.5) with transformers' image and video processors set up as the hub repos ship them
(Qwen2.5-VL-7B-Instruct's preprocessor_config.json: min_pixels 3136, max_pixels 12845056;
Qwen3-VL-8B-Instruct's video_preprocessor_config.json: shortest_edge 4096, longest_edge 25165824,
its image processor 65536 / 16777216) on real files: LLaMA-Factory's demo videos and images
(data/mllm_demo_data) and MPEG-4 videos and PNG images written here with PyAV / Pillow. For each
case it records the processor's grid and the expanded message: how many pad tokens, and the text
around them (vision start/end tokens, Qwen3-VL's per-frame timestamps).

    python3 scripts/make_vision_token_fixtures.py /path/to/LLaMA-Factory

needs: LLaMA-Factory (editable install), transformers 5.8, torchvision, av, pillow.
Writes crates/lorafit-core/tests/fixtures/vision_tokens.json, and internvl_tokens.json: the same
files through LLaMA-Factory's `intern_vl` plugin with the image processor the InternVL3 -hf repos
ship (transformers' GotOcr2ImageProcessor, 448 px tiles, crop_to_patches false, 1-12 patches),
with LLaMA-Factory's `crop_to_patches` off and on; and llava_next_tokens.json: the same files
through the `llava_next` / `llava_next_video` plugins with the processors the llava-hf v1.6 and
LLaVA-NeXT-Video repos ship (336 px, the five grid pinpoints; transformers' LlavaNextProcessor
feature count); and glm4v_tokens.json: the images through the `glm4v` plugin with the image
processor GLM-4.1V-9B ships (12 544 – 9 633 792 pixels over its two frames); and pixtral_tokens.json:
the images through the `pixtral` plugin with the image processors Pixtral-12B (16-px patches,
longest edge 1024, no merge) and Mistral Small 3.1 (14-px patches, longest edge 1540, 2×2 merge) ship;
and llama4_tokens.json: the images through the `llama4` plugin with Llama 4's image processor
(336-px tiles, up to 16, a global tile) and Llama4Processor's prompt layout; and gemma4_tokens.json:
the images through the `gemma4` plugin with Gemma 4's image processor (16-px patches, 280 soft
tokens, 3×3 pooling).

    python3 scripts/make_vision_token_fixtures.py /path/to/LLaMA-Factory pixtral llama4

writes only the named fixtures (qwen, internvl, llava_next, glm4v, pixtral, llama4, gemma4).
"""

import importlib.machinery
import json
import os
import sys
import tempfile
import types

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
try:
    import torchaudio  # noqa: F401
except Exception:  # LLaMA-Factory imports it; nothing here uses it
    _ta = types.ModuleType("torchaudio")
    _ta.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = _ta

from PIL import Image  # noqa: E402
from make_media_fixtures import probe, write_video  # noqa: E402  (same folder)
from llamafactory.data.mm_plugin import get_mm_plugin  # noqa: E402
from transformers.models.glm4v.image_processing_glm4v import Glm4vImageProcessor  # noqa: E402
from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor  # noqa: E402
from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor  # noqa: E402
from transformers.models.llama4.image_processing_llama4 import Llama4ImageProcessor  # noqa: E402
from transformers.models.llama4.processing_llama4 import Llama4Processor  # noqa: E402
from transformers.models.pixtral.image_processing_pixtral import PixtralImageProcessor  # noqa: E402
from transformers.models.llava_next.image_processing_llava_next import LlavaNextImageProcessor  # noqa: E402
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor  # noqa: E402
from transformers.models.llava_next_video.video_processing_llava_next_video import (  # noqa: E402
    LlavaNextVideoVideoProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor  # noqa: E402
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor  # noqa: E402
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/vision_tokens.json")
OUT_INTERNVL = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/internvl_tokens.json")
OUT_LLAVA_NEXT = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/llava_next_tokens.json")
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
OUT_GLM4V = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/glm4v_tokens.json")
OUT_PIXTRAL = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/pixtral_tokens.json")
OUT_LLAMA4 = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/llama4_tokens.json")
OUT_GEMMA4 = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/gemma4_tokens.json")
# (name, image-processor patch, longest edge, processor patch, spatial merge) as the repos ship them:
# mistral-community/pixtral-12b and mistralai/Mistral-Small-3.1-24B-Instruct-2503.
PIXTRAL = [("pixtral-12b", 16, 1024, 16, 1), ("mistral3", 14, 1540, 14, 2)]
PAD_I, PAD_V = "<|image_pad|>", "<|video_pad|>"


def processors(kind):
    if kind == "qwen2_vl":
        ip = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
        vp = Qwen2VLVideoProcessor(min_pixels=3136, max_pixels=12845056)
    else:
        ip = Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2,
            min_pixels=65536, max_pixels=16777216,
            image_mean=[0.5] * 3, image_std=[0.5] * 3,
        )
        vp = Qwen3VLVideoProcessor(size={"longest_edge": 25165824, "shortest_edge": 4096})
    return ip, vp


def expand(kind, settings, images, videos):
    ip, vp = processors(kind)
    proc = types.SimpleNamespace(
        image_processor=ip, video_processor=vp, model_input_names=[], **settings
    )
    proc._calculate_timestamps = types.MethodType(Qwen3VLProcessor._calculate_timestamps, proc)
    plugin = get_mm_plugin(kind, image_token=PAD_I, video_token=PAD_V)
    content = "<image>" * len(images) + "<video>" * len(videos)
    msgs = plugin.process_messages([{"role": "user", "content": content}], images, videos, [], proc)
    text = msgs[0]["content"]
    inputs = plugin._get_mm_inputs(images, videos, [], proc)
    grid = inputs.get("video_grid_thw", inputs.get("image_grid_thw"))
    return {
        "grid": [int(x) for x in grid[0]],
        "pad_tokens": text.count(PAD_I) + text.count(PAD_V),
        "text": text.replace(PAD_I, "").replace(PAD_V, ""),
    }


def expand_internvl(settings, images, videos):
    """LLaMA-Factory's intern_vl plugin: tiles per image / frames, context tokens, the text around them."""
    ip = GotOcr2ImageProcessor(
        size={"height": 448, "width": 448}, crop_to_patches=False, min_patches=1, max_patches=12,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    proc = types.SimpleNamespace(image_processor=ip, image_seq_length=256, **settings)
    plugin = get_mm_plugin("intern_vl", image_token="<image>", video_token="<video>")
    content = "<image>" * len(images) + "<video>" * len(videos)
    msgs = plugin.process_messages([{"role": "user", "content": content}], images, videos, [], proc)
    text = msgs[0]["content"]
    inputs = plugin._get_mm_inputs(images, videos, [], proc)
    return {
        "tiles": int(inputs["pixel_values"].shape[0]),
        "pad_tokens": text.count("<IMG_CONTEXT>"),
        "text": text.replace("<IMG_CONTEXT>", ""),
    }


class LfCallVideoProcessor(LlavaNextVideoVideoProcessor):
    """LLaMA-Factory's base plugin calls `video_processor(images=None, videos=...)` when
    `preprocess` takes `videos`; transformers 5.8's video processors refuse the `images` keyword
    (LLaMA-Factory ff6d4d1 + transformers 5.8 raise here). This drops it; frames and sizes are
    untouched."""

    def __call__(self, images=None, videos=None, **kwargs):
        return super().__call__(videos, **kwargs)


def expand_llava_next(kind, settings, images, videos):
    """LLaMA-Factory's llava_next / llava_next_video plugins: image tokens, crops, video tokens."""
    ip = LlavaNextImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
    )
    vp = LfCallVideoProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = types.SimpleNamespace(
        image_processor=ip, video_processor=vp, patch_size=14, num_additional_image_tokens=1,
        vision_feature_select_strategy="default", **settings,
    )
    for name in ("_get_number_of_features", "_get_unpadded_features"):
        setattr(proc, name, types.MethodType(getattr(LlavaNextProcessor, name), proc))
    plugin = get_mm_plugin(kind, image_token="<image>", video_token="<video>")
    content = "<image>" * len(images) + "<video>" * len(videos)
    msgs = plugin.process_messages([{"role": "user", "content": content}], images, videos, [], proc)
    text = msgs[0]["content"]
    inputs = plugin._get_mm_inputs(images, videos, [], proc)
    if images:
        crops = int(inputs["pixel_values"].shape[1])
    else:
        crops = int(inputs["pixel_values_videos"].shape[1])
    return {"crops": crops, "pad_tokens": text.count("<image>") + text.count("<video>")}


def expand_glm4v(settings, images):
    """LLaMA-Factory's glm4v plugin on images: the processor's grid, pad tokens, the text around."""
    ip = Glm4vImageProcessor(size={"shortest_edge": 12544, "longest_edge": 9633792})
    proc = types.SimpleNamespace(image_processor=ip, **settings)
    plugin = get_mm_plugin("glm4v", image_token="<|image|>", video_token="<|video|>")
    msgs = plugin.process_messages([{"role": "user", "content": "<image>" * len(images)}], images, [], [], proc)
    text = msgs[0]["content"]
    grid = plugin._get_mm_inputs(images, [], [], proc)["image_grid_thw"]
    return {
        "grid": [int(x) for x in grid[0]],
        "pad_tokens": text.count("<|image|>"),
        "text": text.replace("<|image|>", ""),
    }


def expand_pixtral(model, settings, images):
    """LLaMA-Factory's pixtral plugin: [IMG] per merged patch, [IMG_BREAK] per row, [IMG_END] last."""
    _, ip_patch, edge, patch, merge = model
    ip = PixtralImageProcessor(size={"longest_edge": edge}, patch_size={"height": ip_patch, "width": ip_patch})
    proc = types.SimpleNamespace(
        image_processor=ip, patch_size=patch, spatial_merge_size=merge,
        image_break_token="[IMG_BREAK]", image_end_token="[IMG_END]", **settings,
    )
    plugin = get_mm_plugin("pixtral", image_token="[IMG]")
    msgs = plugin.process_messages([{"role": "user", "content": "<image>" * len(images)}], images, [], [], proc)
    text = msgs[0]["content"]
    h, w = (int(x) for x in plugin._get_mm_inputs(images, [], [], proc)["image_sizes"][0])
    return {
        "resized": [w, h],
        "pad_tokens": text.count("[IMG]"),
        "tokens": text.count("[IMG]") + text.count("[IMG_BREAK]") + text.count("[IMG_END]"),
    }


def expand_llama4(settings, images):
    """LLaMA-Factory's llama4 plugin: Llama4Processor's layout of tiles, separators and the global tile."""
    ip = Llama4ImageProcessor(size={"height": 336, "width": 336}, max_patches=16, resize_to_max_canvas=False)
    proc = types.SimpleNamespace(image_processor=ip, patch_size=14, downsample_ratio=4, **settings)
    proc._prompt_split_image = types.MethodType(Llama4Processor._prompt_split_image, proc)
    plugin = get_mm_plugin("llama4", image_token="<|image|>")
    msgs = plugin.process_messages([{"role": "user", "content": "<image>" * len(images)}], images, [], [], proc)
    text = msgs[0]["content"]
    inputs = plugin._get_mm_inputs(images, [], [], proc)
    return {
        "tiles": int(inputs["pixel_values"].shape[0]),
        "aspect_ratio": [int(x) for x in inputs["aspect_ratios"][0]],
        "pad_tokens": text.count("<|patch|>"),
        "tokens": len(__import__("re").findall(r"<\|[a-z_]+\|>", text)),
    }


def expand_gemma4(settings, images):
    """LLaMA-Factory's gemma4 plugin: the processor's soft tokens per image between boi / eoi."""
    ip = Gemma4ImageProcessor(patch_size=16, max_soft_tokens=280, pooling_kernel_size=3)
    proc = types.SimpleNamespace(
        image_processor=ip, boi_token="<boi>", eoi_token="<eoi>", boa_token="<boa>", eoa_token="<eoa>",
        image_token="<img_soft>", video_token="<vid_soft>", audio_token="<aud_soft>", **settings,
    )
    plugin = get_mm_plugin("gemma4", image_token="<image_soft_token>")
    msgs = plugin.process_messages([{"role": "user", "content": "<image>" * len(images)}], images, [], [], proc)
    text = msgs[0]["content"]
    inputs = plugin._get_mm_inputs(images, [], [], proc)
    return {
        "patches": int((inputs["image_position_ids"][0][:, 0] >= 0).sum()),
        "pad_tokens": text.count("<img_soft>"),
        "tokens": text.count("<img_soft>") + text.count("<boi>") + text.count("<eoi>"),
    }


DEFAULTS = {
    "image_max_pixels": 768 * 768,
    "image_min_pixels": 32 * 32,
    "video_max_pixels": 256 * 256,
    "video_min_pixels": 16 * 16,
    "video_fps": 2.0,
    "video_maxlen": 128,
}


def write_fixture(path, cases):
    with open(path, "w") as f:
        json.dump({"made_with": "scripts/make_vision_token_fixtures.py: LLaMA-Factory ff6d4d1, transformers "
                   + __import__("transformers").__version__, "defaults": DEFAULTS, "cases": cases}, f, indent=0)
        f.write("\n")


def main():
    lf = sys.argv[1] if len(sys.argv) > 1 else "/tmp/lf"
    only = set(sys.argv[2:]) or {"qwen", "internvl", "llava_next", "glm4v", "pixtral", "llama4", "gemma4"}
    demo = os.path.join(lf, "data/mllm_demo_data")
    tmp = tempfile.mkdtemp()
    videos = {
        "lf:1.mp4": os.path.join(demo, "1.mp4"),
        "lf:3.mp4": os.path.join(demo, "3.mp4"),
        "lf:4.mp4": os.path.join(demo, "4.mp4"),
    }
    for name, (w, h, sec, fps) in {
        "square512_30s": (512, 512, 30, 4),
        "square512_100s": (512, 512, 100, 3),
        "hd720_3s": (1280, 720, 3, 8),
        "tiny64_2s": (64, 64, 2, 10),
        "square512_1s": (512, 512, 1, 2),
    }.items():
        path = os.path.join(tmp, name + ".mp4")
        write_video(path, w, h, sec, fps)
        videos[name] = path
    images = {
        "lf:1.jpg": os.path.join(demo, "1.jpg"),
        "lf:2.jpg": os.path.join(demo, "2.jpg"),
    }
    for w, h in [(1000, 1000), (2000, 2000), (1280, 720), (20, 20), (4000, 4000)]:
        path = os.path.join(tmp, f"img{w}x{h}.png")
        Image.new("RGB", (w, h), (120, 30, 200)).save(path)
        images[f"{w}x{h}"] = path
    video_settings = [
        {},
        {"video_max_pixels": 448 * 448, "video_fps": 1.0},
        {"video_maxlen": 16},
        {"video_min_pixels": 128 * 128},
        {"video_max_pixels": 1024 * 1024},
        {"video_max_pixels": 300 * 300, "video_fps": 0.5},
    ]
    image_settings = [
        {},
        {"image_max_pixels": 300 * 300},
        {"image_max_pixels": 512 * 512},
        {"image_max_pixels": 1024 * 1024},
        {"image_max_pixels": 200 * 200, "image_min_pixels": 100 * 100},
    ]
    if "qwen" in only:
        cases = []
        for kind in ["qwen2_vl", "qwen3_vl"]:
            for name, path in videos.items():
                for extra in video_settings:
                    settings = {**DEFAULTS, **extra}
                    r = expand(kind, settings, [], [path])
                    cases.append({"kind": kind, "media": "video", "source": name, **probe(path),
                                  "settings": extra, **r})
            for name, path in images.items():
                for extra in image_settings:
                    settings = {**DEFAULTS, **extra}
                    img = Image.open(path)
                    r = expand(kind, settings, [img], [])
                    cases.append({"kind": kind, "media": "image", "source": name,
                                  "width": img.width, "height": img.height,
                                  "settings": extra, **r})
        write_fixture(OUT, cases)
        print(f"{len(cases)} cases -> {OUT}")

    if "internvl" in only:
        internvl = []
        for name, path in videos.items():
            for extra in video_settings:
                r = expand_internvl({**DEFAULTS, **extra}, [], [path])
                internvl.append({"media": "video", "source": name, **probe(path), "settings": extra, **r})
    for w, h in [(448, 448), (1280, 720), (720, 1280), (3000, 500), (500, 3000), (1000, 700), (900, 900)]:
        path = os.path.join(tmp, f"img{w}x{h}.png")
        Image.new("RGB", (w, h), (10, 200, 90)).save(path)
        images[f"{w}x{h}"] = path
    if "internvl" in only:
        for name, path in images.items():
            for crop in [False, True]:
                for extra in image_settings:
                    extra = {**extra, "crop_to_patches": crop}
                    img = Image.open(path)
                    r = expand_internvl({**DEFAULTS, **extra}, [img], [])
                    internvl.append({"media": "image", "source": name, "width": img.width, "height": img.height,
                                     "settings": extra, **r})
        write_fixture(OUT_INTERNVL, internvl)
        print(f"{len(internvl)} InternVL cases -> {OUT_INTERNVL}")
    if "llava_next" in only:
        llava = []
        for name, path in videos.items():
            for extra in video_settings:
                r = expand_llava_next("llava_next_video", {**DEFAULTS, **extra}, [], [path])
                llava.append({"media": "video", "source": name, **probe(path), "settings": extra, **r})
        for name, path in images.items():
            for extra in image_settings:
                img = Image.open(path)
                r = expand_llava_next("llava_next", {**DEFAULTS, **extra}, [img], [])
                llava.append({"media": "image", "source": name, "width": img.width, "height": img.height,
                              "settings": extra, **r})
        write_fixture(OUT_LLAVA_NEXT, llava)
        print(f"{len(llava)} LLaVA-NeXT cases -> {OUT_LLAVA_NEXT}")
    if "glm4v" in only:
        glm = []
        for name, path in images.items():
            for extra in image_settings:
                img = Image.open(path)
                r = expand_glm4v({**DEFAULTS, **extra}, [img])
                glm.append({"media": "image", "source": name, "width": img.width, "height": img.height,
                            "settings": extra, **r})
        write_fixture(OUT_GLM4V, glm)
        print(f"{len(glm)} GLM-4.1V cases -> {OUT_GLM4V}")
    for w, h in [(336, 336), (300, 200), (100, 1500), (1540, 400), (700, 1400), (2000, 1000)]:
        path = os.path.join(tmp, f"img{w}x{h}.png")
        Image.new("RGB", (w, h), (200, 120, 10)).save(path)
        images[f"{w}x{h}"] = path
    def image_cases(expand_one, **fields):
        """Every image under every pixel setting through `expand_one(settings, [image])`."""
        out = []
        for name, path in images.items():
            for extra in image_settings:
                img = Image.open(path)
                r = expand_one({**DEFAULTS, **extra}, [img])
                out.append({**fields, "source": name, "width": img.width, "height": img.height,
                            "settings": extra, **r})
        return out

    for kind, out_path, label, cases in [
        ("pixtral", OUT_PIXTRAL, "Pixtral",
         lambda: [c for m in PIXTRAL
                  for c in image_cases(lambda s, i, m=m: expand_pixtral(m, s, i), model=m[0])]),
        ("llama4", OUT_LLAMA4, "Llama 4", lambda: image_cases(expand_llama4)),
        ("gemma4", OUT_GEMMA4, "Gemma 4", lambda: image_cases(expand_gemma4)),
    ]:
        if kind in only:
            got = cases()
            write_fixture(out_path, got)
            print(f"{len(got)} {label} cases -> {out_path}")


if __name__ == "__main__":
    main()
