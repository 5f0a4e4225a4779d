//! How an image or a video becomes language-model tokens for the Qwen-VL family (Qwen2-VL,
//! Qwen2.5-VL, Qwen3-VL, Qwen3.5), step by step as LLaMA-Factory's `qwen2_vl` / `qwen3_vl`
//! multimodal plugins and transformers' processors do it:
//!
//! 1. LLaMA-Factory resizes each image (each sampled video frame) to at most `image_max_pixels`
//!    (`video_max_pixels`) and at least `image_min_pixels` (`video_min_pixels`), keeping the aspect
//!    ratio and truncating the sides; sides under 28 px become 28; aspect ratios over 200 are cut.
//! 2. A video is sampled at `video_fps` frames per second of its duration, at most `video_maxlen`
//!    and at most its frame count, evenly over its frames; an odd count repeats the last frame.
//! 3. The processor's `smart_resize` rounds the sides to multiples of patch × merge (half to even,
//!    as Python's `round`) within its own pixel bounds: per frame for Qwen2-VL, over all frames
//!    of a video for Qwen3-VL.
//! 4. A grid of t × h × w patches (t = frames / 2) becomes t·h·w / merge² pad tokens, framed by
//!    `<|vision_start|>` and `<|vision_end|>`: once per image or Qwen2-VL video, once per temporal
//!    patch for a Qwen3-VL video, each after a `<12.3 seconds>` timestamp.
//!
//! The processors' bounds are what the hub repos ship (Qwen2.5-VL-7B-Instruct's
//! preprocessor_config.json: 3136 – 12 845 056 pixels; Qwen3-VL-8B-Instruct: images 65 536 –
//! 16 777 216, videos 4096 – 25 165 824 over all frames). `tests/fixtures/vision_tokens.json`
//! (from `scripts/make_vision_token_fixtures.py`, LLaMA-Factory's plugins run on real files) pins
//! every step.

use serde::Serialize;

use super::vision::VisionKind;

/// One processor family's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QwenProcessor {
    pub patch: u64,
    pub merge: u64,
    pub temporal: u64,
    image_min: u64,
    image_max: u64,
    video_min: u64,
    video_max: u64,
    /// Qwen3-VL: the video bounds hold for frames × height × width, and each temporal patch
    /// carries a timestamp.
    qwen3: bool,
    /// GLM-4.1V: an image is two frames (one temporal patch) and the pixel bounds hold for both;
    /// its markers are `<|begin_of_image|>` / `<|end_of_image|>`.
    glm: bool,
}

impl QwenProcessor {
    /// The processor of a tower kind; `None` for towers without a Qwen-style processor.
    pub fn of(kind: VisionKind) -> Option<QwenProcessor> {
        match kind {
            VisionKind::Qwen2Vl | VisionKind::Qwen25Vl | VisionKind::Qwen25Omni => {
                Some(QwenProcessor {
                    patch: 14,
                    merge: 2,
                    temporal: 2,
                    image_min: 3136,
                    image_max: 12_845_056,
                    video_min: 3136,
                    video_max: 12_845_056,
                    qwen3: false,
                    glm: false,
                })
            }
            VisionKind::Qwen3Vl => Some(QwenProcessor {
                patch: 16,
                merge: 2,
                temporal: 2,
                image_min: 65_536,
                image_max: 16_777_216,
                video_min: 4096,
                video_max: 25_165_824,
                qwen3: true,
                glm: false,
            }),
            // GLM-4.1V-9B's preprocessor_config.json: 12 544 – 9 633 792 pixels (videos are
            // sampled by GLM's own video processor, which lorafit does not model).
            VisionKind::Glm4v => Some(QwenProcessor {
                patch: 14,
                merge: 2,
                temporal: 2,
                image_min: 12_544,
                image_max: 9_633_792,
                video_min: 12_544,
                video_max: 9_633_792,
                qwen3: false,
                glm: true,
            }),
            _ => None,
        }
    }

    fn factor(&self) -> u64 {
        self.patch * self.merge
    }

    /// Whether [`QwenProcessor::video`] is this family's video path (GLM-4.1V samples its videos
    /// with its own processor, which lorafit does not model).
    pub fn has_video(&self) -> bool {
        !self.glm
    }
}

/// LLaMA-Factory's `video_*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VideoKeys {
    pub max_pixels: u64,
    pub min_pixels: u64,
    pub fps: f64,
    pub maxlen: u64,
}

impl Default for VideoKeys {
    fn default() -> Self {
        VideoKeys {
            max_pixels: 256 * 256,
            min_pixels: 16 * 16,
            fps: 2.0,
            maxlen: 128,
        }
    }
}

/// What a video file's header says (what PyAV reports to LLaMA-Factory).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VideoFile {
    pub width: u64,
    pub height: u64,
    pub seconds: f64,
    /// Frames in the stream (0: unknown, LLaMA-Factory then takes `video_maxlen` frames).
    pub frames: u64,
    pub average_fps: f64,
    /// A list of frame images rather than a file: LLaMA-Factory takes every frame, and times
    /// them at `video_fps`.
    pub presampled: bool,
}

/// One dataset row's media, as `lorafit estimate` read the files' headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SampleMedia {
    /// (width, height) of each image.
    pub images: Vec<(u64, u64)>,
    pub videos: Vec<VideoFile>,
    pub audios: Vec<AudioFile>,
}

impl VideoFile {
    /// The video lorafit assumes without a file: square frames as large as `video_max_pixels`
    /// allows, 30 frames per second, `seconds` long.
    pub fn assumed(seconds: f64, keys: &VideoKeys) -> VideoFile {
        let side = isqrt(keys.max_pixels).max(1);
        VideoFile {
            width: side,
            height: side,
            seconds,
            frames: (seconds * 30.0).round().max(1.0) as u64,
            average_fps: 30.0,
            presampled: false,
        }
    }
}

/// A patch grid: temporal × height × width patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub t: u64,
    pub h: u64,
    pub w: u64,
}

impl Grid {
    /// Patches the vision tower processes.
    pub fn patches(&self) -> u64 {
        self.t * self.h * self.w
    }
}

/// One image's or video's share of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaTokens {
    pub grid: Grid,
    /// Image / video pad tokens (the tower's merged patches).
    pub pads: u64,
    /// The text around the pads (vision start / end, Qwen3-VL's timestamps).
    pub text: String,
    /// Tokens of `text` (special tokens count one; a timestamp `<12.3 seconds>` counts
    /// `<`, each digit, `.`, ` seconds`, `>`: Qwen2's pre-tokenizer splits digits one by one).
    pub text_tokens: u64,
    /// Frames the processor received (videos: sampled, made even).
    pub frames: u64,
}

impl MediaTokens {
    /// Tokens in the language model's sequence.
    pub fn tokens(&self) -> u64 {
        self.pads + self.text_tokens
    }
}

const START: &str = "<|vision_start|>";
const END: &str = "<|vision_end|>";

pub(crate) fn isqrt(n: u64) -> u64 {
    let mut r = (n as f64).sqrt() as u64;
    while r * r > n {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= n {
        r += 1;
    }
    r
}

/// LLaMA-Factory's base `_preprocess_image` on (width, height): scaled down to at most
/// `max_pixels`, then up to at least `min_pixels`, the sides truncated.
pub fn preprocess(mut w: u64, mut h: u64, max_pixels: u64, min_pixels: u64) -> (u64, u64) {
    let scale = |w: u64, h: u64, target: u64| {
        let f = (target as f64 / (w * h) as f64).sqrt();
        ((w as f64 * f) as u64, (h as f64 * f) as u64)
    };
    if w * h > max_pixels {
        (w, h) = scale(w, h, max_pixels);
    }
    if w * h < min_pixels {
        (w, h) = scale(w.max(1), h.max(1), min_pixels);
    }
    (w, h)
}

/// Step 1: LLaMA-Factory's `_preprocess_image` with the Qwen2-VL plugin's limits, on (width, height).
fn regularize(w: u64, h: u64, max_pixels: u64, min_pixels: u64) -> (u64, u64) {
    let (mut w, mut h) = preprocess(w, h, max_pixels, min_pixels);
    if w.min(h) < 28 {
        (w, h) = (w.max(28), h.max(28));
    }
    if w as f64 / h as f64 > 200.0 {
        w = h * 180;
    }
    if h as f64 / w as f64 > 200.0 {
        h = w * 180;
    }
    (w, h)
}

/// Step 3, transformers' `smart_resize` on (height, width): the pixel bounds hold for `frames`
/// frames together (Qwen3-VL videos; images and Qwen2-VL frames are one frame, temporal 1).
fn smart_resize(
    frames: u64,
    h: u64,
    w: u64,
    temporal: u64,
    factor: u64,
    min_pixels: u64,
    max_pixels: u64,
) -> (u64, u64) {
    let f = factor as f64;
    let round = |x: u64| ((x as f64 / f).round_ties_even() as u64) * factor;
    let (mut hb, mut wb) = (round(h), round(w));
    let tb = frames.div_ceil(temporal) * temporal;
    if tb * hb * wb > max_pixels {
        let beta = ((frames * h * w) as f64 / max_pixels as f64).sqrt();
        hb = factor.max(((h as f64 / beta / f).floor() as u64) * factor);
        wb = factor.max(((w as f64 / beta / f).floor() as u64) * factor);
    } else if tb * hb * wb < min_pixels {
        let beta = (min_pixels as f64 / (frames * h * w) as f64).sqrt();
        hb = ((h as f64 * beta / f).ceil() as u64) * factor;
        wb = ((w as f64 * beta / f).ceil() as u64) * factor;
    }
    (hb, wb)
}

/// Step 2: the frame indices LLaMA-Factory samples (`np.linspace(0, frames - 1, n)` truncated).
pub fn sample_indices(file: &VideoFile, keys: &VideoKeys) -> Vec<u64> {
    if file.presampled {
        return (0..file.frames.max(1)).collect();
    }
    if file.frames == 0 {
        return (0..keys.maxlen).collect();
    }
    let by_fps = ((file.seconds * keys.fps).floor() as u64).max(1);
    let n = file.frames.min(keys.maxlen).min(by_fps);
    if n == 1 {
        return vec![0];
    }
    let stop = (file.frames - 1) as f64;
    let step = stop / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                file.frames - 1
            } else {
                (i as f64 * step) as u64
            }
        })
        .collect()
}

fn timestamp_tokens(ts: &str) -> u64 {
    // `<` + digits + `.` + digit + ` seconds` + `>`
    let digits = ts.chars().filter(char::is_ascii_digit).count() as u64;
    digits + 4
}

impl QwenProcessor {
    /// An image of `width` × `height` under LLaMA-Factory's `image_max_pixels` / `image_min_pixels`.
    pub fn image(&self, width: u64, height: u64, max_pixels: u64, min_pixels: u64) -> MediaTokens {
        let (w, h) = regularize(width, height, max_pixels, min_pixels);
        let (frames, temporal) = if self.glm { (2, 2) } else { (1, 1) };
        let (hb, wb) = smart_resize(
            frames,
            h,
            w,
            temporal,
            self.factor(),
            self.image_min,
            self.image_max,
        );
        let grid = Grid {
            t: 1,
            h: hb / self.patch,
            w: wb / self.patch,
        };
        MediaTokens {
            grid,
            pads: grid.patches() / (self.merge * self.merge),
            text: if self.glm {
                "<|begin_of_image|><|end_of_image|>".into()
            } else {
                format!("{START}{END}")
            },
            text_tokens: 2,
            frames: 1,
        }
    }

    /// A video under LLaMA-Factory's `video_*` keys.
    pub fn video(&self, file: &VideoFile, keys: &VideoKeys) -> MediaTokens {
        let indices = sample_indices(file, keys);
        let frames = indices.len() as u64 + indices.len() as u64 % 2;
        let (w, h) = regularize(file.width, file.height, keys.max_pixels, keys.min_pixels);
        let (t, temporal) = if self.qwen3 {
            (frames, self.temporal)
        } else {
            (1, 1)
        };
        let (hb, wb) = smart_resize(
            t,
            h,
            w,
            temporal,
            self.factor(),
            self.video_min,
            self.video_max,
        );
        let grid = Grid {
            t: frames.div_ceil(self.temporal),
            h: hb / self.patch,
            w: wb / self.patch,
        };
        let pads = grid.patches() / (self.merge * self.merge);
        if !self.qwen3 {
            return MediaTokens {
                grid,
                pads,
                text: format!("{START}{END}"),
                text_tokens: 2,
                frames,
            };
        }
        // Qwen3-VL: a timestamp per temporal patch, the mean of its frames' times
        // (transformers' `_calculate_timestamps` on LLaMA-Factory's frame positions).
        let mut times: Vec<f64> = indices
            .iter()
            .map(|&i| {
                if file.presampled {
                    i as f64 / keys.fps
                } else {
                    i as f64 / file.average_fps * keys.fps / keys.fps
                }
            })
            .collect();
        while !(times.len() as u64).is_multiple_of(self.temporal) {
            times.push(*times.last().unwrap_or(&0.0));
        }
        let (mut text, mut text_tokens) = (String::new(), 0);
        for pair in times.chunks(self.temporal as usize) {
            let t = (pair[0] + pair[pair.len() - 1]) / 2.0;
            let ts = format!("{t:.1}");
            text_tokens += timestamp_tokens(&ts) + 2;
            text.push_str(&format!("<{ts} seconds>{START}{END}"));
        }
        MediaTokens {
            grid,
            pads,
            text,
            text_tokens,
            frames,
        }
    }
}

/// InternVL's 448-px tiles for an image of `width` × `height` (transformers'
/// `get_optimal_tiled_canvas`): among the (columns, rows) grids with `min_tiles` ≤ columns·rows ≤
/// `max_tiles`, in order of tile count, the one whose aspect ratio is closest to the image's; on a
/// tie the grid with more tiles wins while the image covers more than half of it.
pub fn internvl_grid(
    width: u64,
    height: u64,
    min_tiles: u64,
    max_tiles: u64,
    tile: u64,
) -> (u64, u64) {
    let mut grids = Vec::new();
    for c in 1..=max_tiles {
        for r in 1..=max_tiles {
            if (min_tiles..=max_tiles).contains(&(c * r)) {
                grids.push((c, r));
            }
        }
    }
    grids.sort_by_key(|&(c, r)| c * r); // stable, as Python's `sorted`
    let aspect = width as f64 / height.max(1) as f64;
    let area = (width * height) as f64;
    let (mut best, mut best_diff) = ((1, 1), f64::INFINITY);
    for (c, r) in grids {
        let diff = (aspect - c as f64 / r as f64).abs();
        if diff < best_diff {
            (best, best_diff) = ((c, r), diff);
        } else if diff == best_diff && area > 0.5 * tile as f64 * tile as f64 * c as f64 * r as f64
        {
            best = (c, r);
        }
    }
    best
}

/// Tiles the InternVL image processor makes of one image (LLaMA-Factory's `intern_vl` plugin):
/// one 448-px tile, or with `crop_to_patches: true` the grid of [`internvl_grid`] (1–12 tiles) on
/// the image as LLaMA-Factory resized it, plus a thumbnail when the grid has more than one tile.
pub fn internvl_tiles(width: u64, height: u64, keys: &ImageKeys, tile: u64) -> u64 {
    if !keys.crop_to_patches {
        return 1;
    }
    let (w, h) = preprocess(width, height, keys.max_pixels, keys.min_pixels);
    let (c, r) = internvl_grid(w.max(1), h.max(1), 1, 12, tile);
    if c * r > 1 { c * r + 1 } else { 1 }
}

/// One InternVL image: `tiles` × `tile_tokens` context tokens inside `<img>` … `</img>`; the tower
/// sees `tile_patches` (patches + class token) per tile.
pub fn internvl_image(tiles: u64, tile_tokens: u64, tile_patches: u64) -> MediaTokens {
    MediaTokens {
        grid: Grid {
            t: tiles,
            h: 1,
            w: tile_patches,
        },
        pads: tiles * tile_tokens,
        text: "<img></img>".into(),
        text_tokens: 2,
        frames: 1,
    }
}

/// One InternVL video: each frame LLaMA-Factory samples (base plugin: no even count) is one tile
/// without cropping, written `Frame{i}: <img>…</img>` and the frames joined by newlines. Text
/// tokens as Qwen2's pre-tokenizer splits them: `Frame` (one token), each digit, `:`, the space,
/// the two image tags, and one `\n` between frames.
pub fn internvl_video(
    file: &VideoFile,
    keys: &VideoKeys,
    tile_tokens: u64,
    tile_patches: u64,
) -> MediaTokens {
    let frames = sample_indices(file, keys).len() as u64;
    let mut text = String::new();
    let mut text_tokens = 0;
    for i in 1..=frames {
        if i > 1 {
            text.push('\n');
            text_tokens += 1;
        }
        text.push_str(&format!("Frame{i}: <img></img>"));
        text_tokens += 3 + i.to_string().len() as u64 + 2;
    }
    MediaTokens {
        grid: Grid {
            t: frames,
            h: 1,
            w: tile_patches,
        },
        pads: frames * tile_tokens,
        text,
        text_tokens,
        frames,
    }
}

/// transformers' `select_best_resolution`: the (height, width) canvas that keeps the most of an
/// image of `height` × `width` when scaled into it, then wastes the least.
pub fn best_resolution(height: u64, width: u64, canvases: &[(u64, u64)]) -> (u64, u64) {
    let (mut best, mut max_effective, mut min_wasted) = ((height, width), 0u64, u64::MAX);
    for &(ch, cw) in canvases {
        let scale = (cw as f64 / width as f64).min(ch as f64 / height as f64);
        let (dw, dh) = (
            (width as f64 * scale) as u64,
            (height as f64 * scale) as u64,
        );
        let effective = (dw * dh).min(width * height);
        let wasted = (cw * ch).saturating_sub(effective);
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            (max_effective, min_wasted, best) = (effective, wasted, (ch, cw));
        }
    }
    best
}

/// Python's `int(round(x, 7))` for the non-negative values LLaVA-NeXT's unpadding computes.
fn int_round7(x: f64) -> u64 {
    ((x * 1e7).round() / 1e7).floor() as u64
}

/// One LLaVA-NeXT image of `width` × `height` (as LLaMA-Factory resized it): transformers'
/// `_get_number_of_features` less the class token (`vision_feature_select_strategy: default`).
/// The best canvas of `pinpoints` in `tile`-px tiles (`side` patches a side) is unpadded to the
/// image's aspect ratio, plus a newline token per row and the base view's `side`² tokens; the
/// tower sees the base view and every tile, each `side`² patches + a class token.
pub fn llava_next_image(
    width: u64,
    height: u64,
    pinpoints: &[(u64, u64)],
    tile: u64,
    side: u64,
) -> MediaTokens {
    let (bh, bw) = best_resolution(height, width, pinpoints);
    let (sh, sw) = (bh / tile, bw / tile);
    let (mut ch, mut cw) = (side * sh, side * sw);
    if width as f64 / height as f64 > cw as f64 / ch as f64 {
        let new_h = int_round7(height as f64 * (cw as f64 / width as f64));
        ch -= 2 * (ch.saturating_sub(new_h) / 2);
    } else {
        let new_w = int_round7(width as f64 * (ch as f64 / height as f64));
        cw -= 2 * (cw.saturating_sub(new_w) / 2);
    }
    let crops = 1 + sh * sw;
    MediaTokens {
        grid: Grid {
            t: crops,
            h: 1,
            w: side * side + 1,
        },
        pads: ch * cw + ch + side * side,
        text: String::new(),
        text_tokens: 0,
        frames: 1,
    }
}

/// One LLaVA-NeXT-Video video: the frames LLaMA-Factory samples (base plugin), each a 336-px view
/// pooled to `frame_tokens` tokens; the tower sees `frame_patches` a frame.
pub fn llava_next_video(
    file: &VideoFile,
    keys: &VideoKeys,
    frame_tokens: u64,
    frame_patches: u64,
) -> MediaTokens {
    let frames = sample_indices(file, keys).len() as u64;
    MediaTokens {
        grid: Grid {
            t: frames,
            h: 1,
            w: frame_patches,
        },
        pads: frames * frame_tokens,
        text: String::new(),
        text_tokens: 0,
        frames,
    }
}

/// LLaMA-Factory's `pixtral` plugin on one `width` × `height` image: the base `_preprocess_image`,
/// then transformers' `PixtralImageProcessor` (scaled down, floored, until the longest side fits
/// `max_edge`; each side rounded up to whole `patch`es), then one `[IMG]` per `merge` × `merge`
/// patches (rounded down, as Mistral 3's patch merger), an `[IMG_BREAK]` ending each row and
/// `[IMG_END]` in place of the last one. The tower sees every patch.
pub fn pixtral_image(
    width: u64,
    height: u64,
    keys: &ImageKeys,
    patch: u64,
    merge: u64,
    max_edge: u64,
) -> MediaTokens {
    let (w, h) = preprocess(width, height, keys.max_pixels, keys.min_pixels);
    let (mut w, mut h) = (w.max(1), h.max(1));
    let ratio = (h as f64 / max_edge as f64).max(w as f64 / max_edge as f64);
    if max_edge > 0 && ratio > 1.0 {
        (w, h) = ((w as f64 / ratio) as u64, (h as f64 / ratio) as u64);
    }
    let patch = patch.max(1);
    let (ph, pw) = (h.max(1).div_ceil(patch), w.max(1).div_ceil(patch));
    let (rows, cols) = (ph / merge.max(1), pw / merge.max(1));
    MediaTokens {
        grid: Grid { t: 1, h: ph, w: pw },
        pads: rows * cols,
        text: String::new(),
        text_tokens: if cols > 0 { rows } else { 0 },
        frames: 1,
    }
}

/// The (rows, columns) of `tile`-px tiles Llama 4's image processor pads an `height` × `width`
/// image to (transformers' `get_best_fit` over every canvas of at most `max_tiles` tiles, listed
/// as `find_supported_resolutions` lists them): the smallest upscale that fits, else the least
/// downscale; ties to the smallest canvas, then the first listed. Scales in f32, as torch does.
pub fn llama4_canvas(height: u64, width: u64, tile: u64, max_tiles: u64) -> (u64, u64) {
    // Canvases grouped by aspect ratio in first-seen order, as the processor's dict keeps them.
    let mut groups: Vec<(f64, Vec<(u64, u64)>)> = Vec::new();
    for chunks in (1..=max_tiles).rev() {
        let mut factors: Vec<u64> = (1..=chunks).filter(|f| chunks % f == 0).collect();
        factors.sort_unstable();
        for f in factors {
            let (h, w) = (f, chunks / f);
            let ratio = h as f64 / w as f64;
            match groups.iter_mut().find(|(r, _)| *r == ratio) {
                Some((_, list)) => list.push((h, w)),
                None => groups.push((ratio, vec![(h, w)])),
            }
        }
    }
    let canvases: Vec<(u64, u64)> = groups.into_iter().flat_map(|(_, l)| l).collect();
    let scale = |&(h, w): &(u64, u64)| {
        let sw = (w * tile) as f32 / width.max(1) as f32;
        let sh = (h * tile) as f32 / height.max(1) as f32;
        if sh > sw { sw } else { sh }
    };
    let scales: Vec<f32> = canvases.iter().map(scale).collect();
    let up = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .fold(None, |m: Option<f32>, s| Some(m.map_or(s, |m| m.min(s))));
    let chosen = up.unwrap_or_else(|| scales.iter().copied().fold(f32::MIN, f32::max));
    let mut best: Option<(u64, u64)> = None;
    for (c, s) in canvases.iter().zip(&scales) {
        if *s == chosen && best.is_none_or(|b| c.0 * c.1 < b.0 * b.1) {
            best = Some(*c);
        }
    }
    best.unwrap_or((1, 1))
}

/// LLaMA-Factory's `llama4` plugin on one `width` × `height` image: the base `_preprocess_image`,
/// the tiling of [`llama4_canvas`] (up to 16 tiles of `tile` px) plus a global tile when there is
/// more than one, each `tile_tokens` `<|patch|>` tokens; around them Llama4Processor's
/// `<|image_start|>`, a `<|tile_x_separator|>` between the tiles of a row, a
/// `<|tile_y_separator|>` after each row, `<|image|>` before the global tile and `<|image_end|>`.
/// The tower sees `tile_patches` a tile.
pub fn llama4_image(
    width: u64,
    height: u64,
    keys: &ImageKeys,
    tile: u64,
    tile_tokens: u64,
    tile_patches: u64,
) -> MediaTokens {
    let (w, h) = preprocess(width, height, keys.max_pixels, keys.min_pixels);
    let (rows, cols) = llama4_canvas(h.max(1), w.max(1), tile, 16);
    let (tiles, separators) = if rows * cols > 1 {
        (rows * cols + 1, rows * cols)
    } else {
        (1, 0)
    };
    MediaTokens {
        grid: Grid {
            t: tiles,
            h: 1,
            w: tile_patches,
        },
        pads: tiles * tile_tokens,
        text: String::new(),
        text_tokens: 3 + separators,
        frames: 1,
    }
}

/// LLaMA-Factory's `gemma4` plugin on one `width` × `height` image: the base `_preprocess_image`,
/// then transformers' Gemma 4 image processor, which resizes the image (up or down) to the
/// largest size of whole `pool` × `pool`-patch cells whose patches fit `max_tokens` × pool²,
/// keeping its aspect ratio (`get_aspect_ratio_preserving_size`); each cell pools into one soft
/// token, framed by `<start_of_image>` … `<end_of_image>`. The tower sees every patch.
pub fn gemma4_image(
    width: u64,
    height: u64,
    keys: &ImageKeys,
    patch: u64,
    pool: u64,
    max_tokens: u64,
) -> MediaTokens {
    let (w, h) = preprocess(width, height, keys.max_pixels, keys.min_pixels);
    let (w, h) = (w.max(1), h.max(1));
    let cell = (patch * pool).max(1);
    let max_patches = max_tokens * pool * pool;
    let factor = ((max_patches * patch * patch) as f64 / (w * h) as f64).sqrt();
    let mut th = ((factor * h as f64) / cell as f64).floor() as u64 * cell;
    let mut tw = ((factor * w as f64) / cell as f64).floor() as u64 * cell;
    let longest = (max_patches / (pool * pool).max(1)) * cell;
    if th == 0 && tw > 0 {
        th = cell;
        tw = ((w / h) * cell).min(longest);
    } else if tw == 0 && th > 0 {
        tw = cell;
        th = ((h / w) * cell).min(longest);
    }
    let (rows, cols) = (th / cell, tw / cell);
    MediaTokens {
        grid: Grid {
            t: 1,
            h: rows * pool,
            w: cols * pool,
        },
        pads: rows * cols,
        text: String::new(),
        text_tokens: 2,
        frames: 1,
    }
}

/// One audio as its file's header says: samples per channel as FFmpeg decodes them (what
/// `torchaudio.load` gives LLaMA-Factory) and their rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AudioFile {
    pub samples: u64,
    pub rate: u64,
}

impl AudioFile {
    /// The audio lorafit assumes without a file: `seconds` long at `rate`.
    pub fn assumed(seconds: f64, rate: u64) -> AudioFile {
        AudioFile {
            samples: (seconds * rate as f64).round().max(0.0) as u64,
            rate,
        }
    }

    /// Samples after LLaMA-Factory's `_regularize_audios` resamples to `to` Hz
    /// (`torchaudio.functional.resample`: ⌈samples · to / rate⌉, the rates reduced by their gcd).
    pub fn resampled(&self, to: u64) -> u64 {
        if self.rate == to || self.rate == 0 || to == 0 {
            return self.samples;
        }
        let g = gcd(self.rate, to);
        let (from, to) = ((self.rate / g) as u128, (to / g) as u128);
        (self.samples as u128 * to)
            .div_ceil(from)
            .min(u64::MAX as u128) as u64
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One audio's share of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTokens {
    /// Audio pad tokens in the language model's sequence.
    pub pads: u64,
    /// The special tokens around them (`<|audio_bos|>` … `<|audio_eos|>`, `<boa>` … `<eoa>`).
    pub text_tokens: u64,
    /// Positions the audio encoder runs over (its input is padded to 30 s whatever the length).
    pub positions: u64,
}

impl AudioTokens {
    pub fn tokens(&self) -> u64 {
        self.pads + self.text_tokens
    }
}

/// 30 s at 16 kHz: Whisper's window, and Gemma 4's feature extractor's `max_length`.
const AUDIO_WINDOW: u64 = 480_000;
/// The mel hop at 16 kHz (10 ms).
const MEL_HOP: u64 = 160;

/// Qwen2-Audio through LLaMA-Factory's `qwen2_audio` plugin: Whisper's feature extractor pads or
/// cuts the 16 kHz waveform to 30 s and marks ⌈samples / 160⌉ mel frames valid; the encoder's
/// stride-2 convolution halves them and its pooling halves them again: `(frames − 1) // 2 + 1`,
/// then `(that − 2) // 2 + 1` `<|AUDIO|>` tokens between `<|audio_bos|>` and `<|audio_eos|>`.
/// The encoder itself runs over all `max_source_positions` (1500) positions.
pub fn qwen2_audio_tokens(samples_16k: u64, positions: u64) -> AudioTokens {
    AudioTokens {
        positions,
        ..whisper_tokens(samples_16k, AUDIO_WINDOW)
    }
}

/// The Qwen audio plugins' arithmetic on a Whisper feature extractor's `window` samples: the
/// pads, and the stride-2 convolution's output over the valid frames as the positions.
fn whisper_tokens(samples_16k: u64, window: u64) -> AudioTokens {
    let frames = samples_16k.min(window).div_ceil(MEL_HOP);
    let conv = if frames == 0 { 0 } else { (frames - 1) / 2 + 1 };
    AudioTokens {
        pads: if conv < 2 { 0 } else { (conv - 2) / 2 + 1 },
        text_tokens: 2,
        positions: conv,
    }
}

/// Qwen2.5-Omni through LLaMA-Factory's `qwen2_omni` plugin: Qwen2-Audio's arithmetic over a
/// 300 s window (the hub repo's WhisperFeatureExtractor: `chunk_length` 300), between
/// `<|audio_start|>` and `<|audio_end|>`. The encoder runs over the valid frames only (in
/// 100-frame windows): `(frames − 1) // 2 + 1` positions.
pub fn qwen2_omni_audio_tokens(samples_16k: u64) -> AudioTokens {
    whisper_tokens(samples_16k, 10 * AUDIO_WINDOW)
}

/// Gemma 4 (transformers' `Gemma4Processor._compute_audio_num_tokens`): 20 ms mel frames every
/// 10 ms after 160 samples of left padding, two stride-2 convolutions, at most `max_tokens`
/// (`audio_seq_length`, 750) tokens between `<boa>` and `<eoa>`. The conformer runs over the
/// feature extractor's 30 s of padded frames after subsampling: `max_tokens` positions.
pub fn gemma4_audio_tokens(samples_16k: u64, max_tokens: u64) -> AudioTokens {
    let (frame, pad_left) = (2 * MEL_HOP, MEL_HOP);
    let padded = samples_16k + pad_left;
    let mel = if padded < frame + 1 {
        0
    } else {
        (padded - (frame + 1)) / MEL_HOP + 1
    };
    let mut t = mel;
    if t > 0 {
        for _ in 0..2 {
            t = (t + 2 - 3) / 2 + 1;
        }
    }
    AudioTokens {
        pads: t.min(max_tokens),
        text_tokens: 2,
        positions: max_tokens,
    }
}

/// LLaMA-Factory's image keys (`image_max_pixels`, `image_min_pixels`, InternVL's `crop_to_patches`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImageKeys {
    pub max_pixels: u64,
    pub min_pixels: u64,
    pub crop_to_patches: bool,
}

impl Default for ImageKeys {
    fn default() -> Self {
        ImageKeys {
            max_pixels: 768 * 768,
            min_pixels: 32 * 32,
            crop_to_patches: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_exact() {
        for n in [0u64, 1, 2, 3, 4, 65535, 65536, 65537, 589_824, 1 << 40] {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        // 42 / 28 = 1.5 → 2, 70 / 28 = 2.5 → 2 (Python's round), not 3.
        assert_eq!(smart_resize(1, 70, 42, 1, 28, 0, u64::MAX), (56, 56));
    }
}
