//! Vision towers of vision-language models (`vision_config` in a multimodal config.json) and
//! audio encoders (`audio_config`): their parameters, the linears LoRA can wrap in them, and how
//! many tokens an image, a video or an audio becomes.
//!
//! Shapes follow transformers 5.8's modules; `tests/arch_reference.rs` checks every catalog
//! tower's count against transformers itself.

use serde::Serialize;
use serde_json::{Map, Value};

use super::media::{
    self, AudioFile, AudioTokens, ImageKeys, MediaTokens, QwenProcessor, VideoFile, VideoKeys,
    isqrt,
};
use super::{Linear, get_bool, get_f64, get_u64, req_u64};
use crate::error::Error;

/// The tower families lorafit knows, by the top-level `model_type` that carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionKind {
    /// Qwen2-VL: LayerNorm blocks with a GELU MLP (`fc1` / `fc2`), 14-px patches, 2×2 merge.
    Qwen2Vl,
    /// Qwen2.5-VL: RMSNorm blocks with a SwiGLU MLP, 14-px patches, 2×2 merge.
    Qwen25Vl,
    /// Qwen3-VL / Qwen3.5: LayerNorm blocks, learned position table, 16-px patches, 2×2 merge,
    /// DeepStack mergers (Qwen3-VL).
    Qwen3Vl,
    /// SigLIP (Gemma 3): fixed 896 px, 4096 patches pooled to `mm_tokens_per_image`; an RMSNorm
    /// and a bare projection matrix.
    Siglip,
    /// SigLIP in PaliGemma / PaliGemma 2: fixed 224 / 448 / 896 px, every patch a token; one
    /// `nn.Linear` projector.
    PaliGemma,
    /// Pixtral (Mistral Small 3.x): RMSNorm SwiGLU blocks, 2×2 patch merger; in a LLaVA config
    /// (Pixtral 12B) no merger and LLaVA's two-layer projector.
    Pixtral,
    /// Llama 4: 336-px tiles, pixel shuffle 0.5 (144 tokens per tile).
    Llama4,
    /// Gemma 4: 16-px patches of an image resized to fill a budget of soft tokens (280) whatever
    /// its aspect ratio, 3×3 patches average-pooled into one token; q/k-normed GeGLU blocks, a
    /// two-axis position table, a bare linear into the text width (`embed_vision`).
    Gemma4,
    /// CLIP ViT (LLaVA 1.5): fixed 336 px, 576 patch tokens + a class token; an MLP projector.
    Clip,
    /// LLaVA-NeXT: the CLIP tower on "anyres" crops — a 336-px base view plus the tiles of the
    /// `image_grid_pinpoints` canvas that fits the image best, unpadded, with a newline token
    /// per row.
    LlavaNext,
    /// LLaVA-NeXT-Video: LLaVA-NeXT's images, and video frames at 336 px pooled 2×2 (144 tokens
    /// a frame).
    LlavaNextVideo,
    /// GLM-4.1V: RMSNorm SwiGLU blocks (MLP as wide as the output), 14-px patches, learned
    /// positions, a 2×2 convolution down to the language width and a SwiGLU merger.
    Glm4v,
    /// InternViT (InternVL 3 / 3.5, transformers' `internvl`): 448-px tiles of 14-px patches plus a
    /// class token, pixel shuffle 0.5 (256 tokens per tile), a LayerNorm + 2-layer MLP projector;
    /// `crop_to_patches` tiles an image by its aspect ratio ([`media::internvl_image`](super::media::internvl_image)).
    InternVit,
    /// Llama 3.2 Vision (`mllama`): 560-px tiles (up to `max_num_tiles`) of 14-px patches plus a
    /// class token, a local and a gated global encoder, tile and aspect-ratio position tables;
    /// the image enters the language model through cross-attention layers, not as tokens (one
    /// `<|image|>` token per image).
    Mllama,
    /// Qwen2.5-Omni's thinker: Qwen2.5-VL's tower (its processor, 14-px patches, 2×2 merge)
    /// beside an audio encoder ([`AudioKind::Qwen25Omni`]); LLaMA-Factory freezes both with the
    /// vision keys and counts the merger and the audio `proj` as projectors.
    Qwen25Omni,
    /// Qwen2-Audio: no image tower; a Whisper-style audio encoder ([`AudioEncoder`]) and a
    /// linear projector (`multi_modal_projector`), which LLaMA-Factory freezes and trains as a
    /// vision tower and projector.
    Qwen2Audio,
}

/// The audio encoders lorafit counts audio tokens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioKind {
    /// Qwen2-Audio's Whisper encoder ([`media::qwen2_audio_tokens`]).
    Qwen2Audio,
    /// Gemma 4 E2B / E4B's conformer ([`media::gemma4_audio_tokens`]).
    Gemma4,
    /// Qwen2.5-Omni's Whisper-style encoder over a 300 s window, valid frames only
    /// ([`media::qwen2_omni_audio_tokens`]).
    Qwen25Omni,
}

/// An audio encoder: what its tokens and (when trained) activations depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AudioEncoder {
    pub kind: AudioKind,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub depth: u64,
    /// Positions the encoder runs over per audio (Whisper: `max_source_positions`; Gemma 4:
    /// `audio_seq_length`), which also caps the tokens.
    pub positions: u64,
    /// The encoder's parameters (part of the tower's), for its FLOPs.
    pub params: u64,
}

/// A vision tower and its projector into the language model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vision {
    pub kind: VisionKind,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub depth: u64,
    pub num_heads: u64,
    pub patch_size: u64,
    /// Patches merged into one language-model token per side (2 → 2×2).
    pub merge: u64,
    /// The linears of one block (each `layers` = depth).
    #[serde(skip)]
    pub block_linears: Vec<Linear>,
    /// Tower parameters (blocks, patch and position embeddings, norms).
    pub tower_params: u64,
    /// Projector (merger) parameters.
    pub projector_params: u64,
    /// LLaMA-Factory's `lora_target: all` also wraps the projector's linears when the projector
    /// is trained; their shapes.
    #[serde(skip)]
    pub projector_linears: Vec<Linear>,
    /// Fixed-resolution towers: tokens per image whatever its size (SigLIP).
    pub fixed_tokens: Option<u64>,
    /// Fixed-resolution towers: the tower's sequence per image.
    pub fixed_patches: Option<u64>,
    /// LLaVA-NeXT's `image_grid_pinpoints`: the (height, width) canvases "anyres" picks from.
    #[serde(skip)]
    pub pinpoints: Vec<(u64, u64)>,
    /// Pixtral: the longest image edge its processor keeps (`size.longest_edge`, the tower's
    /// `image_size`: 1024 for Pixtral 12B, 1540 for Mistral Small 3.1); 0 for other towers.
    pub max_edge: u64,
    /// Gemma 4: the processor's soft-token budget per image (`default_output_length`, 280); 0 for
    /// other towers.
    pub max_tokens: u64,
    /// Parameters the wrapper adds outside the tower and projector (LLaVA-NeXT's
    /// `image_newline`): LLaMA-Factory's freeze keys do not name them, so they train with the
    /// language model.
    pub wrapper_params: u64,
    /// The audio encoder, for models that take audio (Qwen2-Audio, Gemma 4 E2B / E4B); its
    /// parameters are in `tower_params` / `projector_params`.
    pub audio: Option<AudioEncoder>,
}

fn lin(name: &'static str, i: u64, o: u64, bias: bool, layers: u64) -> Linear {
    Linear {
        name,
        in_features: i,
        out_features: o,
        bias,
        count: 1,
        targetable: true,
        in_all: true,
        layers,
    }
}

/// A ViT block's linears: separate q / k / v (with `qkv_bias`), the output projection named `o`
/// (biased), and a biased `fc1` / `fc2` MLP — SigLIP, CLIP, Llama 4's and InternViT's blocks.
fn vit_block(o: &'static str, h: u64, i: u64, qkv_bias: bool, depth: u64) -> Vec<Linear> {
    vec![
        lin("q_proj", h, h, qkv_bias, depth),
        lin("k_proj", h, h, qkv_bias, depth),
        lin("v_proj", h, h, qkv_bias, depth),
        lin(o, h, h, true, depth),
        lin("fc1", h, i, true, depth),
        lin("fc2", i, h, true, depth),
    ]
}

fn sum(ls: &[Linear]) -> u64 {
    ls.iter().map(Linear::total_params).sum()
}

/// Gemma 4's audio tower (E2B / E4B): a two-convolution subsampler, conformer blocks (two
/// feed-forwards, chunked attention with a relative-key projection, a depthwise light
/// convolution) and an output projection; then `embed_audio` into the text width. Returns the
/// parameters outside the linears, the linears (each block's), and `embed_audio`'s projection.
fn gemma4_audio(
    a: &Map<String, Value>,
    text_hidden: u64,
) -> Result<(u64, Vec<Linear>, Linear, AudioEncoder), Error> {
    let u = |k: &str, d: u64| u_a(a, k, d);
    let (h, depth, heads) = (
        u("hidden_size", 1024)?,
        u("num_hidden_layers", 12)?,
        u("num_attention_heads", 8)?,
    );
    let kernel = u("conv_kernel_size", 5)?;
    let out = u("output_proj_dims", 1536)?;
    let (c0, c1) = match a.get("subsampling_conv_channels") {
        Some(Value::Array(c)) => match c.as_slice() {
            [x, y] => (x.as_u64().unwrap_or(128), y.as_u64().unwrap_or(32)),
            _ => (128, 32),
        },
        _ => (128, 32),
    };
    let hd = h / heads.max(1);
    let linears = vec![
        lin("ffw_layer_1", h, 4 * h, false, 2 * depth),
        lin("ffw_layer_2", 4 * h, h, false, 2 * depth),
        lin("q_proj", h, h, false, depth),
        lin("k_proj", h, h, false, depth),
        lin("v_proj", h, h, false, depth),
        lin("post", h, h, false, depth),
        lin("relative_k_proj", h, h, false, depth),
        lin("linear_start", h, 2 * h, false, depth),
        lin("linear_end", h, h, false, depth),
        lin("input_proj_linear", (c0 / 4) * c1, h, false, 1),
        lin("output_proj", h, out, true, 1),
    ];
    // Per block: the feed-forwards' pre / post norms (4), the light convolution's depthwise
    // kernel and two norms, three more norms, the attention's per-dimension scale; the
    // subsampler's 3×3 convolutions (no bias) and their LayerNorms (no bias).
    let other = depth * (4 * h + h * kernel + 2 * h + 3 * h + hd) + 9 * c0 + c0 + 9 * c0 * c1 + c1;
    let encoder = AudioEncoder {
        kind: AudioKind::Gemma4,
        hidden_size: h,
        intermediate_size: 4 * h,
        depth,
        positions: GEMMA4_AUDIO_TOKENS,
        params: other + sum(&linears),
    };
    Ok((
        other,
        linears,
        lin("embedding_projection", out, text_hidden, false, 1),
        encoder,
    ))
}

/// Gemma 4's processor's `audio_seq_length` (the hub repos' processor_config.json and
/// transformers' default): at most 750 tokens an audio, the conformer's positions for 30 s.
const GEMMA4_AUDIO_TOKENS: u64 = 750;

fn u_a(a: &Map<String, Value>, k: &str, d: u64) -> Result<u64, Error> {
    get_u64(a, k)
        .map(|x| x.unwrap_or(d))
        .map_err(|e| Error::ModelConfig(format!("audio_config: {e}").replace("model config: ", "")))
}

/// The Whisper encoder both Qwen audio models build on (transformers' defaults where
/// `audio_config` is silent: 1280 wide, 32 layers, 5120 MLP, 128 mel bins).
struct WhisperEncoder {
    width: u64,
    layers: u64,
    ffn: u64,
    /// Each block's linears: biased q / v / out, an unbiased k, the MLP.
    block: Vec<Linear>,
    /// Two LayerNorms a block and a final one; conv1 (mel → d) and conv2 (d → d), kernel 3,
    /// biased.
    other: u64,
}

impl WhisperEncoder {
    fn parse(a: &Map<String, Value>) -> Result<WhisperEncoder, Error> {
        let d = u_a(a, "d_model", 1280)?;
        let layers = u_a(a, "encoder_layers", 32)?;
        let ffn = u_a(a, "encoder_ffn_dim", 5120)?;
        let mel = u_a(a, "num_mel_bins", 128)?;
        Ok(WhisperEncoder {
            width: d,
            layers,
            ffn,
            block: vec![
                lin("q_proj", d, d, true, layers),
                lin("k_proj", d, d, false, layers),
                lin("v_proj", d, d, true, layers),
                lin("out_proj", d, d, true, layers),
                lin("fc1", d, ffn, true, layers),
                lin("fc2", ffn, d, true, layers),
            ],
            other: layers * 4 * d + 2 * d + (3 * mel * d + d) + (3 * d * d + d),
        })
    }
}

/// Qwen2.5-Omni's audio encoder (`audio_config` of the thinker; transformers'
/// `Qwen2_5OmniAudioEncoder`): Whisper's blocks and convolutions without a learned position
/// table (sinusoids), a final LayerNorm, a 2-row bos / eos table and `proj` into `output_dim`.
/// Returns (the encoder without `proj`, its block linears, `proj`).
fn omni_audio(
    a: &Map<String, Value>,
    text_hidden: u64,
) -> Result<(u64, Vec<Linear>, Linear, AudioEncoder), Error> {
    let w = WhisperEncoder::parse(a)?;
    let (d, layers, ffn) = (w.width, w.layers, w.ffn);
    let out = u_a(a, "output_dim", text_hidden)?;
    let block = w.block;
    let other = w.other + 2 * out;
    let proj = lin("proj", d, out, true, 1);
    let encoder = AudioEncoder {
        kind: AudioKind::Qwen25Omni,
        hidden_size: d,
        intermediate_size: ffn,
        depth: layers,
        // At most 300 s: 30 000 mel frames, halved by the stride-2 convolution.
        positions: 15_000,
        params: sum(&block) + other + proj.total_params(),
    };
    Ok((sum(&block) + other, block, proj, encoder))
}

impl Vision {
    /// Qwen2.5-Omni's thinker: its audio encoder beside the vision tower.
    fn with_omni_audio(
        mut self,
        top: &Map<String, Value>,
        text_hidden: u64,
    ) -> Result<Vision, Error> {
        let empty = Map::new();
        let a = match top.get("audio_config") {
            Some(Value::Object(a)) => a,
            _ => &empty,
        };
        let (encoder, linears, proj, audio) = omni_audio(a, text_hidden)?;
        self.tower_params += encoder;
        self.block_linears.extend(linears);
        self.projector_params += proj.total_params();
        self.projector_linears.push(proj);
        self.audio = Some(audio);
        Ok(self)
    }
}

/// Qwen2-Audio (`qwen2_audio`): `audio_config` is a Whisper encoder (transformers'
/// `Qwen2AudioEncoder`: two convolutions over the mel bins, a frozen position table of
/// `max_source_positions`, pre-norm blocks with biased q / v / out and an unbiased k, a final
/// LayerNorm) and `multi_modal_projector.linear` into the text width; transformers' defaults
/// where the config is silent (1280 wide, 32 layers, 20 heads, 5120 MLP, 128 mel bins).
fn qwen2_audio(top: &Map<String, Value>, text_hidden: u64) -> Result<Vision, Error> {
    let empty = Map::new();
    let a = match top.get("audio_config") {
        Some(Value::Object(a)) => a,
        None => &empty,
        Some(_) => {
            return Err(Error::ModelConfig(
                "`audio_config` must be an object".into(),
            ));
        }
    };
    let w = WhisperEncoder::parse(a)?;
    let (d, layers, ffn) = (w.width, w.layers, w.ffn);
    let positions = u_a(a, "max_source_positions", 1500)?;
    let block = w.block;
    // And the learned position table.
    let other = w.other + positions * d;
    let tower = sum(&block) + other;
    let proj = vec![lin("linear", d, text_hidden, true, 1)];
    Ok(Vision {
        num_heads: u_a(a, "encoder_attention_heads", 20)?,
        tower_params: tower,
        projector_params: sum(&proj),
        block_linears: block,
        projector_linears: proj,
        audio: Some(AudioEncoder {
            kind: AudioKind::Qwen2Audio,
            hidden_size: d,
            intermediate_size: ffn,
            depth: layers,
            positions,
            params: tower,
        }),
        ..Vision::blank(VisionKind::Qwen2Audio)
    })
}

/// A square size given as a number or as `[height, width]` (InternViT's `image_size` /
/// `patch_size`).
fn side(v: &Map<String, Value>, key: &str, default: u64) -> Result<u64, Error> {
    match v.get(key) {
        Some(Value::Array(a)) => match a.as_slice() {
            [h, w] if h == w && h.as_u64().is_some_and(|x| x > 0) => {
                Ok(h.as_u64().unwrap_or(default))
            }
            _ => Err(Error::ModelConfig(format!(
                "vision_config `{key}` = {}: expected a number or a square [n, n]",
                Value::Array(a.clone())
            ))),
        },
        _ => Ok(get_u64(v, key)?.unwrap_or(default)),
    }
}

/// LLaVA-NeXT's `image_grid_pinpoints` ([[height, width], …]; transformers' default when absent).
fn pinpoints(top: &Map<String, Value>) -> Result<Vec<(u64, u64)>, Error> {
    let Some(v) = top.get("image_grid_pinpoints") else {
        return Ok(vec![
            (336, 672),
            (672, 336),
            (672, 672),
            (1008, 336),
            (336, 1008),
        ]);
    };
    let bad = || {
        Error::ModelConfig(format!(
            "`image_grid_pinpoints` = {v}: expected a list of [height, width] pairs"
        ))
    };
    let list = v.as_array().ok_or_else(bad)?;
    let mut out = Vec::new();
    for p in list {
        match p.as_array().map(Vec::as_slice) {
            Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                (Some(h), Some(w)) if h > 0 && w > 0 && h <= 1 << 16 && w <= 1 << 16 => {
                    out.push((h, w))
                }
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

impl VisionKind {
    /// Whether the model takes images (Qwen2-Audio is audio only).
    pub fn takes_images(self) -> bool {
        self != VisionKind::Qwen2Audio
    }

    /// Whether lorafit models this tower's video path (the Qwen-VL family's, InternVL's and
    /// LLaVA-NeXT-Video's).
    pub fn has_video(self) -> bool {
        QwenProcessor::of(self).is_some_and(|p| p.has_video())
            || matches!(self, VisionKind::InternVit | VisionKind::LlavaNextVideo)
    }
}

impl Vision {
    /// A tower of `kind` with nothing counted yet: each `parse` arm fills in its own fields; the
    /// rest are what most towers have (tokens from the patch grid, no pinpoints, nothing outside
    /// the tower and projector).
    fn blank(kind: VisionKind) -> Vision {
        Vision {
            kind,
            hidden_size: 0,
            intermediate_size: 0,
            depth: 0,
            num_heads: 0,
            patch_size: 0,
            merge: 1,
            block_linears: Vec::new(),
            tower_params: 0,
            projector_params: 0,
            projector_linears: Vec::new(),
            fixed_tokens: None,
            fixed_patches: None,
            pinpoints: Vec::new(),
            max_edge: 0,
            max_tokens: 0,
            wrapper_params: 0,
            audio: None,
        }
    }

    /// Parse `vision_config` of a multimodal config whose top-level `model_type` is `top_type`.
    /// `None` when the type has no tower lorafit knows.
    pub fn parse(
        top_type: &str,
        top: &Map<String, Value>,
        text_hidden: u64,
    ) -> Result<Option<Vision>, Error> {
        let kind = match top_type {
            "qwen2_vl" => VisionKind::Qwen2Vl,
            "qwen2_5_vl" => VisionKind::Qwen25Vl,
            "qwen3_vl" | "qwen3_vl_moe" | "qwen3_5" | "qwen3_5_moe" => VisionKind::Qwen3Vl,
            "gemma3" => VisionKind::Siglip,
            "mistral3" => VisionKind::Pixtral,
            "llama4" => VisionKind::Llama4,
            "paligemma" => VisionKind::PaliGemma,
            "llava"
                if top
                    .get("vision_config")
                    .and_then(|v| v.get("model_type"))
                    .and_then(Value::as_str)
                    == Some("pixtral") =>
            {
                VisionKind::Pixtral
            }
            "llava" => VisionKind::Clip,
            "llava_next" => VisionKind::LlavaNext,
            "llava_next_video" => VisionKind::LlavaNextVideo,
            "glm4v" | "glm4v_moe" => VisionKind::Glm4v,
            "internvl" => VisionKind::InternVit,
            "mllama" => VisionKind::Mllama,
            "gemma4" => VisionKind::Gemma4,
            "qwen2_audio" => VisionKind::Qwen2Audio,
            "qwen2_5_omni_thinker" => VisionKind::Qwen25Omni,
            _ => return Ok(None),
        };
        // Qwen2-Audio has no image tower: only its `audio_config`.
        let empty = Map::new();
        let v = match top.get("vision_config") {
            Some(Value::Object(v)) => v,
            _ if kind == VisionKind::Qwen2Audio => &empty,
            _ => {
                return Err(Error::ModelConfig(format!(
                    "model_type `{top_type}` needs a `vision_config` block"
                )));
            }
        };
        let ctx = |e: Error| {
            Error::ModelConfig(format!("vision_config: {e}").replace("model config: ", ""))
        };
        let u = |k: &str, d: u64| get_u64(v, k).map(|x| x.unwrap_or(d)).map_err(ctx);
        let r = |k: &str| req_u64(v, k).map_err(ctx);
        let vision = match kind {
            VisionKind::Qwen2Vl => {
                let e = u("embed_dim", 1280)?;
                let depth = u("depth", 32)?;
                let ratio = u("mlp_ratio", 4)?;
                let (p, m, tp) = (
                    u("patch_size", 14)?,
                    u("spatial_merge_size", 2)?,
                    u("temporal_patch_size", 2)?,
                );
                let out = u("hidden_size", text_hidden)?;
                let block = vec![
                    lin("qkv", e, 3 * e, true, depth),
                    lin("proj", e, e, true, depth),
                    lin("fc1", e, e * ratio, true, depth),
                    lin("fc2", e * ratio, e, true, depth),
                ];
                let proj = vec![
                    lin("mlp.0", e * m * m, e * m * m, true, 1),
                    lin("mlp.2", e * m * m, out, true, 1),
                ];
                Vision {
                    hidden_size: e,
                    intermediate_size: e * ratio,
                    depth,
                    num_heads: u("num_heads", 16)?,
                    patch_size: p,
                    merge: m,
                    tower_params: sum(&block) + depth * 4 * e + e * 3 * tp * p * p,
                    projector_params: sum(&proj) + 2 * e,
                    block_linears: block,
                    projector_linears: proj,
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Qwen25Vl | VisionKind::Qwen25Omni => {
                let (h, i, depth) = (r("hidden_size")?, r("intermediate_size")?, u("depth", 32)?);
                let (p, m, tp) = (
                    u("patch_size", 14)?,
                    u("spatial_merge_size", 2)?,
                    u("temporal_patch_size", 2)?,
                );
                let out = u("out_hidden_size", text_hidden)?;
                let block = vec![
                    lin("qkv", h, 3 * h, true, depth),
                    lin("proj", h, h, true, depth),
                    lin("gate_proj", h, i, true, depth),
                    lin("up_proj", h, i, true, depth),
                    lin("down_proj", i, h, true, depth),
                ];
                let proj = vec![
                    lin("mlp.0", h * m * m, h * m * m, true, 1),
                    lin("mlp.2", h * m * m, out, true, 1),
                ];
                let mut vision = Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_heads", 16)?,
                    patch_size: p,
                    merge: m,
                    tower_params: sum(&block) + depth * 2 * h + h * 3 * tp * p * p,
                    projector_params: sum(&proj) + h,
                    block_linears: block,
                    projector_linears: proj,
                    ..Vision::blank(kind)
                };
                if kind == VisionKind::Qwen25Omni {
                    vision = vision.with_omni_audio(top, text_hidden)?;
                }
                vision
            }
            VisionKind::Qwen3Vl => {
                let (h, i, depth) = (r("hidden_size")?, r("intermediate_size")?, u("depth", 27)?);
                let (p, m, tp) = (
                    u("patch_size", 16)?,
                    u("spatial_merge_size", 2)?,
                    u("temporal_patch_size", 2)?,
                );
                let out = u("out_hidden_size", text_hidden)?;
                let npos = u("num_position_embeddings", 2304)?;
                let deepstack = match v.get("deepstack_visual_indexes") {
                    Some(Value::Array(a)) => a.len() as u64,
                    _ => 0,
                };
                let block = vec![
                    lin("qkv", h, 3 * h, true, depth),
                    lin("proj", h, h, true, depth),
                    lin("linear_fc1", h, i, true, depth),
                    lin("linear_fc2", i, h, true, depth),
                ];
                let hm = h * m * m;
                let proj = vec![
                    lin("linear_fc1", hm, hm, true, 1),
                    lin("linear_fc2", hm, out, true, 1),
                ];
                // DeepStack mergers: the same MLP with its norm after the shuffle (width h·m²).
                let deep = deepstack * (sum(&proj) + 2 * hm);
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_heads", 16)?,
                    patch_size: p,
                    merge: m,
                    tower_params: sum(&block)
                        + depth * 4 * h
                        + h * 3 * tp * p * p
                        + h
                        + npos * h
                        + deep,
                    projector_params: sum(&proj) + 2 * h,
                    block_linears: block,
                    projector_linears: proj,
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Siglip | VisionKind::PaliGemma => {
                let (h, i, depth) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                );
                let (p, img) = (u("patch_size", 14)?, u("image_size", 896)?);
                let patches = (img / p.max(1)).pow(2);
                let block = vit_block("out_proj", h, i, true, depth);
                let paligemma = kind == VisionKind::PaliGemma;
                let tokens = if paligemma {
                    patches
                } else {
                    get_u64(top, "mm_tokens_per_image")?.unwrap_or(256)
                };
                // PaliGemma: `multi_modal_projector.linear` to `projection_dim`, with a bias.
                let out = get_u64(top, "projection_dim")?.unwrap_or(text_hidden);
                let proj = if paligemma {
                    vec![lin("linear", h, out, true, 1)]
                } else {
                    Vec::new()
                };
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_attention_heads", 16)?,
                    patch_size: p,
                    merge: 1,
                    tower_params: sum(&block)
                        + depth * 4 * h
                        + h * 3 * p * p
                        + h
                        + patches * h
                        + 2 * h,
                    // Gemma 3: a bare [h_vision, h_text] matrix and an RMSNorm; not an nn.Linear.
                    projector_params: if paligemma {
                        sum(&proj)
                    } else {
                        h * text_hidden + h
                    },
                    block_linears: block,
                    projector_linears: proj,
                    fixed_tokens: Some(tokens),
                    fixed_patches: Some(patches),
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Pixtral => {
                let (h, i, depth) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                );
                let p = u("patch_size", 14)?;
                // Pixtral 12B in LLaVA's format: no patch merger, LLaVA's projector (biased by
                // default).
                let llava = top_type == "llava";
                let m = if llava {
                    1
                } else {
                    get_u64(top, "spatial_merge_size")?.unwrap_or(2)
                };
                let bias = top
                    .get("multimodal_projector_bias")
                    .and_then(Value::as_bool)
                    .unwrap_or(llava);
                let block = vec![
                    lin("q_proj", h, h, false, depth),
                    lin("k_proj", h, h, false, depth),
                    lin("v_proj", h, h, false, depth),
                    lin("o_proj", h, h, false, depth),
                    lin("gate_proj", h, i, false, depth),
                    lin("up_proj", h, i, false, depth),
                    lin("down_proj", i, h, false, depth),
                ];
                let mut proj = vec![
                    lin("linear_1", h, text_hidden, bias, 1),
                    lin("linear_2", text_hidden, text_hidden, bias, 1),
                ];
                if !llava {
                    proj.insert(0, lin("merging_layer", h * m * m, h, false, 1));
                }
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_attention_heads", 16)?,
                    patch_size: p,
                    merge: m,
                    max_edge: u("image_size", 1024)?,
                    tower_params: sum(&block) + depth * 2 * h + h * 3 * p * p + h,
                    // Mistral 3's projector norm.
                    projector_params: sum(&proj) + if llava { 0 } else { h },
                    block_linears: block,
                    projector_linears: proj,
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Llama4 => {
                let (h, i, depth) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                );
                let (p, img) = (u("patch_size", 14)?, u("image_size", 336)?);
                let patches = (img / p.max(1)).pow(2);
                let shuffle_in = 4 * h; // pixel shuffle 0.5: 4 patches' features side by side
                let (pin, pout) = (
                    u("projector_input_dim", 4096)?,
                    u("projector_output_dim", 4096)?,
                );
                let block = vit_block("o_proj", h, i, true, depth);
                let adapter = vec![
                    lin("fc1", shuffle_in, pin, false, 1),
                    lin("fc2", pin, pout, false, 1),
                ];
                let proj = vec![lin(
                    "linear_1",
                    u("vision_output_dim", pout)?,
                    text_hidden,
                    false,
                    1,
                )];
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_attention_heads", 16)?,
                    patch_size: p,
                    merge: 2,
                    tower_params: sum(&block)
                        + depth * 4 * h
                        + 3 * p * p * h
                        + h
                        + (patches + 1) * h
                        + 4 * h
                        + sum(&adapter),
                    projector_params: sum(&proj),
                    block_linears: block,
                    projector_linears: proj,
                    // One 336-px tile: 576 patches shuffled to 144 tokens.
                    fixed_tokens: Some(patches / 4),
                    fixed_patches: Some(patches + 1),
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Clip | VisionKind::LlavaNext | VisionKind::LlavaNextVideo => {
                let (h, i, depth) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                );
                let (p, img) = (u("patch_size", 14)?, u("image_size", 336)?);
                let patches = (img / p.max(1)).pow(2);
                let bias = top
                    .get("multimodal_projector_bias")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let block = vit_block("out_proj", h, i, true, depth);
                let proj = vec![
                    lin("linear_1", h, text_hidden, bias, 1),
                    lin("linear_2", text_hidden, text_hidden, bias, 1),
                ];
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_attention_heads", 16)?,
                    patch_size: p,
                    merge: 1,
                    // patch conv (no bias), class token, positions, pre/post LayerNorms.
                    tower_params: sum(&block)
                        + depth * 4 * h
                        + 3 * p * p * h
                        + h
                        + (patches + 1) * h
                        + 4 * h,
                    projector_params: sum(&proj),
                    block_linears: block,
                    projector_linears: proj,
                    // `vision_feature_select_strategy: default` drops the class token.
                    fixed_tokens: Some(get_u64(top, "image_seq_length")?.unwrap_or(patches)),
                    fixed_patches: Some(patches + 1),
                    pinpoints: if kind != VisionKind::Clip {
                        pinpoints(top)?
                    } else {
                        Vec::new()
                    },
                    wrapper_params: if kind != VisionKind::Clip
                        && get_bool(top, "use_image_newline_parameter").unwrap_or(true)
                    {
                        text_hidden
                    } else {
                        0
                    },
                    ..Vision::blank(kind)
                }
            }
            VisionKind::InternVit => {
                let (h, i, depth) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                );
                let (p, img) = (side(v, "patch_size", 14)?, side(v, "image_size", 448)?);
                let patches = (img / p.max(1)).pow(2);
                let flag = |k: &str, d: bool| get_bool(v, k).unwrap_or(d);
                let bias = flag("attention_bias", true);
                let rms = v.get("norm_type").and_then(Value::as_str) == Some("rms_norm");
                let norm = if rms { h } else { 2 * h };
                // Pixel shuffle: `downsample_ratio` 0.5 folds 2×2 patches into one token.
                let ratio = get_f64(top, "downsample_ratio").unwrap_or(0.5);
                let fold = if ratio > 0.0 && ratio < 1.0 {
                    (1.0 / ratio).round() as u64
                } else {
                    1
                };
                let block = vit_block("projection_layer", h, i, bias, depth);
                let shuffled = h * fold * fold;
                let proj = vec![
                    lin("linear_1", shuffled, text_hidden, true, 1),
                    lin("linear_2", text_hidden, text_hidden, true, 1),
                ];
                // Per block: the two layer-scale vectors, the two norms, RMS q/k norms over all heads.
                let per_block =
                    2 * h + 2 * norm + if flag("use_qk_norm", false) { 2 * h } else { 0 };
                let positions = if flag("use_absolute_position_embeddings", true) {
                    (patches + 1) * h
                } else {
                    0
                };
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("num_attention_heads", 16)?,
                    patch_size: p,
                    merge: fold,
                    // class token, positions, patch conv (with bias), optional mask token, a
                    // final norm unless the tower mean-pools.
                    tower_params: sum(&block)
                        + depth * per_block
                        + h
                        + positions
                        + 3 * p * p * h
                        + h
                        + if flag("use_mask_token", false) { h } else { 0 }
                        + if flag("use_mean_pooling", true) {
                            0
                        } else {
                            2 * h
                        },
                    projector_params: sum(&proj) + 2 * shuffled,
                    block_linears: block,
                    projector_linears: proj,
                    fixed_tokens: Some(
                        get_u64(top, "image_seq_length")?.unwrap_or(patches / (fold * fold)),
                    ),
                    fixed_patches: Some(patches + 1),
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Glm4v => {
                let (h, i, depth) = (r("hidden_size")?, r("intermediate_size")?, u("depth", 24)?);
                let (p, m, tp) = (
                    u("patch_size", 14)?,
                    u("spatial_merge_size", 2)?,
                    u("temporal_patch_size", 2)?,
                );
                let out = u("out_hidden_size", text_hidden)?;
                let img = u("image_size", 336)?;
                let bias = get_bool(v, "attention_bias").unwrap_or(false);
                let block = vec![
                    lin("qkv", h, 3 * h, bias, depth),
                    lin("proj", h, h, bias, depth),
                    lin("gate_proj", h, out, false, depth),
                    lin("up_proj", h, out, false, depth),
                    lin("down_proj", out, h, false, depth),
                ];
                let proj = vec![
                    lin("proj", out, out, false, 1),
                    lin("gate_proj", out, i, false, 1),
                    lin("up_proj", out, i, false, 1),
                    lin("down_proj", i, out, false, 1),
                ];
                Vision {
                    hidden_size: h,
                    intermediate_size: out,
                    depth,
                    num_heads: u("num_heads", 12)?,
                    patch_size: p,
                    merge: m,
                    // LLaMA-Factory freezes `visual.patch_embed` and `visual.blocks`.
                    tower_params: sum(&block) + depth * 2 * h + h * 3 * tp * p * p + h,
                    projector_params: sum(&proj) + 2 * out,
                    block_linears: block,
                    projector_linears: proj,
                    // Outside both: learned positions, the norms around the blocks and the 2×2
                    // downsampling convolution — trained with the language model.
                    wrapper_params: (img / p.max(1)).pow(2) * h + 2 * h + out * h * m * m + out,
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Gemma4 => {
                let (h, i, depth) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                );
                let heads = u("num_attention_heads", 12)?;
                let kv_heads = u("num_key_value_heads", 12)?;
                let hd = u("head_dim", 64)?;
                let (p, pool) = (u("patch_size", 16)?, u("pooling_kernel_size", 3)?);
                let block = vec![
                    lin("q_proj", h, heads * hd, false, depth),
                    lin("k_proj", h, kv_heads * hd, false, depth),
                    lin("v_proj", h, kv_heads * hd, false, depth),
                    lin("o_proj", heads * hd, h, false, depth),
                    lin("gate_proj", h, i, false, depth),
                    lin("up_proj", h, i, false, depth),
                    lin("down_proj", i, h, false, depth),
                ];
                let mut proj = vec![lin("embedding_projection", h, text_hidden, false, 1)];
                let mut block = block;
                // Four RMSNorms and the q / k norms a block (v's has no weight), the patch
                // projection (no bias) and the [2, positions, h] position table.
                let mut tower = depth * (4 * h + 2 * hd)
                    + 3 * p * p * h
                    + 2 * u("position_embedding_size", 10240)? * h;
                // E2B / E4B's audio tower and its `embed_audio`: LLaMA-Factory freezes and trains
                // them with the vision tower and projector (they are under its vision keys).
                let mut audio = None;
                if let Some(Value::Object(a)) = top.get("audio_config") {
                    let (a_tower, a_linears, a_proj, encoder) = gemma4_audio(a, text_hidden)?;
                    audio = Some(encoder);
                    tower += a_tower;
                    block.extend(a_linears);
                    proj.push(a_proj);
                }
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: heads,
                    patch_size: p,
                    merge: pool,
                    max_tokens: u("default_output_length", 280)?,
                    audio,
                    tower_params: sum(&block) + tower,
                    projector_params: sum(&proj),
                    block_linears: block,
                    projector_linears: proj,
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Mllama => {
                let (h, i, local, global) = (
                    r("hidden_size")?,
                    r("intermediate_size")?,
                    r("num_hidden_layers")?,
                    u("num_global_layers", 8)?,
                );
                let (p, img, tiles) = (
                    u("patch_size", 14)?,
                    u("image_size", 560)?,
                    u("max_num_tiles", 4)?,
                );
                // Aspect-ratio ids index the supported tilings; row 0 is padding.
                let ratios = match v.get("supported_aspect_ratios") {
                    Some(Value::Array(a)) => a.len() as u64,
                    _ => 8,
                };
                let n = (img / p.max(1)).pow(2) + 1;
                let depth = local + global;
                let block = vec![
                    lin("q_proj", h, h, false, depth),
                    lin("k_proj", h, h, false, depth),
                    lin("v_proj", h, h, false, depth),
                    lin("o_proj", h, h, false, depth),
                    lin("fc1", h, i, true, depth),
                    lin("fc2", i, h, true, depth),
                ];
                let out = u("vision_output_dim", h * 6)?;
                let proj = vec![lin("multi_modal_projector", out, text_hidden, true, 1)];
                // Positions: a gated table per patch and one per (aspect ratio, tile, patch);
                // gated pre- and post-tile tables per (aspect ratio, tile).
                let positions = 1 + n * h + (ratios + 1) * tiles * n * h;
                let tile_tables = 2 * ((ratios + 1) * tiles * h + 1);
                Vision {
                    hidden_size: h,
                    intermediate_size: i,
                    depth,
                    num_heads: u("attention_heads", 16)?,
                    patch_size: p,
                    merge: 1,
                    // Two LayerNorms a block, the global blocks' two gates, the patch conv
                    // (no bias), the class token, the pre / post LayerNorms.
                    tower_params: sum(&block)
                        + depth * 4 * h
                        + 2 * global
                        + 3 * p * p * h
                        + h
                        + positions
                        + tile_tables
                        + 4 * h,
                    projector_params: sum(&proj),
                    block_linears: block,
                    projector_linears: proj,
                    // The language model sees one `<|image|>` token; the tower encodes every
                    // tile (the processor pads to `max_num_tiles`).
                    fixed_tokens: Some(1),
                    fixed_patches: Some(tiles * n),
                    ..Vision::blank(kind)
                }
            }
            VisionKind::Qwen2Audio => qwen2_audio(top, text_hidden)?,
        };
        Ok(Some(vision))
    }

    /// All tower + projector parameters.
    pub fn params(&self) -> u64 {
        self.tower_params + self.projector_params
    }

    /// (language-model tokens, tower patches) of one image as lorafit assumes it without a file:
    /// square, as large as `image_max_pixels` allows. The Qwen-VL family, InternVL, LLaVA-NeXT,
    /// Pixtral and Llama 4 follow LLaMA-Factory's plugin and the processor step by step
    /// ([`media`](super::media); the tokens include the special tokens around the pads); SigLIP's,
    /// CLIP's and Llama 3.2 Vision's counts are fixed.
    pub fn image_tokens(&self, keys: &ImageKeys) -> (u64, u64) {
        let side = isqrt(keys.max_pixels).max(1);
        self.sized_image_tokens(side, side, keys)
    }

    /// (language-model tokens, tower patches) of one `width` × `height` image.
    pub fn sized_image_tokens(&self, width: u64, height: u64, keys: &ImageKeys) -> (u64, u64) {
        let (max_pixels, min_pixels) = (keys.max_pixels, keys.min_pixels);
        if let Some(p) = QwenProcessor::of(self.kind) {
            let m = p.image(width, height, max_pixels, min_pixels);
            return (m.tokens(), m.grid.patches());
        }
        // Tiled towers: a tile's sequence is its square of patches + the class token, so the
        // tile's side in pixels is patch × √(sequence − 1) (448 for InternViT, 336 for CLIP).
        match (self.kind, self.fixed_tokens, self.fixed_patches) {
            (VisionKind::InternVit, Some(t), Some(p)) => {
                let tile = self.patch_size * isqrt(p - 1);
                let tiles = media::internvl_tiles(width, height, keys, tile);
                let m = media::internvl_image(tiles, t, p);
                (m.tokens(), m.grid.patches())
            }
            (VisionKind::LlavaNext | VisionKind::LlavaNextVideo, Some(_), Some(p)) => {
                let (w, h) = media::preprocess(width, height, max_pixels, min_pixels);
                let side = isqrt(p - 1);
                let tile = self.patch_size * side;
                let m = media::llava_next_image(w.max(1), h.max(1), &self.pinpoints, tile, side);
                (m.tokens(), m.grid.patches())
            }
            (VisionKind::Llama4, Some(t), Some(p)) => {
                let m = media::llama4_image(width, height, keys, 336, t, p);
                (m.tokens(), m.grid.patches())
            }
            (VisionKind::Gemma4, _, _) => {
                let m = media::gemma4_image(
                    width,
                    height,
                    keys,
                    self.patch_size,
                    self.merge,
                    self.max_tokens,
                );
                (m.tokens(), m.grid.patches())
            }
            (VisionKind::Pixtral, _, _) => {
                let m = media::pixtral_image(
                    width,
                    height,
                    keys,
                    self.patch_size,
                    self.merge,
                    self.max_edge,
                );
                (m.tokens(), m.grid.patches())
            }
            // The fixed-size towers (SigLIP, PaliGemma, CLIP, Llama 3.2 Vision); every other
            // kind is handled above.
            _ => (
                self.fixed_tokens.unwrap_or(0),
                self.fixed_patches.unwrap_or(0),
            ),
        }
    }

    /// One video's tokens, tower patches and frames: `file` as the dataset's video header gives
    /// it, else a `seconds`-long video as [`VideoFile::assumed`]. `None` for towers whose video
    /// path lorafit does not model (only the Qwen-VL family's and InternVL's are).
    pub fn video_tokens(
        &self,
        file: Option<&VideoFile>,
        seconds: f64,
        keys: &VideoKeys,
    ) -> Option<MediaTokens> {
        let assumed = VideoFile::assumed(seconds, keys);
        let file = file.unwrap_or(&assumed);
        match (self.kind, self.fixed_tokens, self.fixed_patches) {
            (VisionKind::InternVit, Some(t), Some(p)) => {
                return Some(media::internvl_video(file, keys, t, p));
            }
            (VisionKind::LlavaNextVideo, Some(t), Some(p)) => {
                return Some(media::llava_next_video(file, keys, t / 4, p));
            }
            _ => {}
        }
        QwenProcessor::of(self.kind)
            .filter(QwenProcessor::has_video)
            .map(|p| p.video(file, keys))
    }

    /// One audio's tokens and encoder positions: `file` as the dataset's audio header gives it,
    /// else `seconds` long; resampled to `rate` (`audio_sampling_rate`) first, as
    /// LLaMA-Factory does. `None` for models without an audio encoder.
    pub fn audio_tokens(
        &self,
        file: Option<&AudioFile>,
        seconds: f64,
        rate: u64,
    ) -> Option<AudioTokens> {
        let a = self.audio.as_ref()?;
        let samples = file
            .copied()
            .unwrap_or_else(|| AudioFile::assumed(seconds, rate))
            .resampled(rate);
        Some(match a.kind {
            AudioKind::Qwen2Audio => media::qwen2_audio_tokens(samples, a.positions),
            AudioKind::Gemma4 => media::gemma4_audio_tokens(samples, a.positions),
            AudioKind::Qwen25Omni => media::qwen2_omni_audio_tokens(samples),
        })
    }
}
