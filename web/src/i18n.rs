//! English and 简体中文 labels; the page starts in the browser's language.

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

/// The label `key` in `lang` (the key itself when missing, so nothing is ever blank).
pub fn t(lang: Lang, key: &'static str) -> &'static str {
    let (en, zh) = match key {
        "tagline" => (
            "will your fine-tune fit, how long, what it costs",
            "微调显存、时长与费用估算",
        ),
        "copy_link" => ("Copy link", "复制链接"),
        "stage_help" => (
            "stage: dpo / kto / rm put chosen and rejected in one batch; DPO full or freeze keeps a frozen reference copy",
            "训练阶段：dpo / kto / rm 一个批次含 chosen 与 rejected；全参或冻结微调的 DPO 另有一份参考模型",
        ),
        "pref_help" => (
            "pref_loss: orpo and simpo need no reference model",
            "偏好损失：orpo 与 simpo 不需要参考模型",
        ),
        "liger_help" => (
            "Liger's fused linear cross-entropy: no full-vocabulary logits (pt / sft only)",
            "Liger 融合交叉熵：不保存整词表 logits（仅 pt / sft）",
        ),
        "unsloth_help" => (
            "Unsloth's gradient checkpointing keeps the checkpoints in host RAM",
            "Unsloth 梯度检查点：检查点保存在内存中",
        ),
        "host_ram" => ("host RAM (offload)", "内存占用（卸载）"),
        "chart" => (
            "Peak against cutoff_len and batch size",
            "峰值显存随截断长度与批大小的变化",
        ),
        "model" => ("Model", "模型"),
        "family" => ("Family", "模型系列"),
        "family_help" => (
            "Pick a model family: sets the model to its first catalog entry",
            "选择模型系列：模型设为该系列的第一个条目",
        ),
        "images_help" => (
            "Images per training sample; their tokens are part of cutoff_len (lorafit key)",
            "每个训练样本的图片数；图片 token 计入 cutoff_len（lorafit 参数）",
        ),
        "pixels_help" => (
            "LLaMA-Factory image_max_pixels: images are resized to at most this many pixels",
            "LLaMA-Factory 的 image_max_pixels：图片缩放到不超过此像素数",
        ),
        "crop_help" => (
            "LLaMA-Factory crop_to_patches (InternVL): an image becomes 1-12 448-px tiles by its aspect ratio, plus a thumbnail, 256 tokens each",
            "LLaMA-Factory 的 crop_to_patches（InternVL）：按宽高比把图片切成 1–12 个 448 像素的图块，另加一张缩略图，每块 256 个 token",
        ),
        "freeze_vt_help" => (
            "LLaMA-Factory freezes the vision tower and projector by default",
            "LLaMA-Factory 默认冻结视觉编码器和投影层",
        ),
        "vision" => ("Vision tower", "视觉编码器"),
        "audio_encoder" => ("Audio encoder", "音频编码器"),
        "projector" => ("projector", "投影层"),
        "trained" => ("trained", "训练"),
        "frozen" => ("frozen", "冻结"),
        "images" => ("images", "张图片"),
        "videos" => ("videos", "个视频"),
        "frames" => ("frames", "帧"),
        "audios" => ("audios", "段音频"),
        "audios_help" => (
            "Audios per training sample (Qwen2-Audio, Qwen2.5-Omni, Gemma 4 E2B / E4B); each is cut to 30 s (Qwen2.5-Omni: 300 s), its tokens are part of cutoff_len (lorafit key)",
            "每个训练样本的音频数（Qwen2-Audio、Qwen2.5-Omni、Gemma 4 E2B / E4B）；每段音频截断到 30 秒（Qwen2.5-Omni 为 300 秒），音频 token 计入 cutoff_len（lorafit 参数）",
        ),
        "audio_seconds_help" => (
            "Length of each audio in seconds (lorafit key; the CLI reads it from the dataset's files)",
            "每段音频的时长（秒，lorafit 参数；命令行版从数据集文件读取）",
        ),
        "videos_help" => (
            "Videos per training sample; sampled at video_fps (2) up to video_maxlen (128) frames, their tokens are part of cutoff_len (lorafit key)",
            "每个训练样本的视频数；按 video_fps（2）抽帧、最多 video_maxlen（128）帧，视频 token 计入 cutoff_len（lorafit 参数）",
        ),
        "video_seconds_help" => (
            "Length of each video in seconds (lorafit key; the CLI reads it from the dataset's files)",
            "每个视频的时长（秒，lorafit 参数；命令行版从数据集文件读取）",
        ),
        "video_pixels_help" => (
            "LLaMA-Factory video_max_pixels: each frame is resized to at most this many pixels",
            "LLaMA-Factory 的 video_max_pixels：每帧缩放到不超过此像素数",
        ),
        "model_help" => (
            "model_name_or_path: a catalog model (its config.json is built in)",
            "model_name_or_path：内置模型目录（含 config.json）",
        ),
        "method" => ("Method", "微调方法"),
        "method_help" => (
            "finetuning_type + quantization_bit, as LLaMA-Factory reads them",
            "finetuning_type + quantization_bit，与 LLaMA-Factory 一致",
        ),
        "rank_help" => (
            "LoRA rank r: adapter size r·(in+out) per targeted module",
            "LoRA 秩 r：每个目标模块 r·(in+out) 个参数",
        ),
        "batch_help" => (
            "micro-batch per GPU: activations and logits grow with it",
            "每卡批大小：激活与 logits 随之增长",
        ),
        "ga_help" => (
            "micro-batches per optimizer step: time, not memory (gradients stay alive)",
            "梯度累积步数：影响时间，几乎不影响显存",
        ),
        "cutoff_help" => (
            "tokens per sample; memory is linear in it (s² with eager attention)",
            "截断长度；显存随之线性增长（eager 注意力为平方）",
        ),
        "gc" => ("gradient checkpointing", "梯度检查点"),
        "gc_help" => (
            "recompute each layer in backward: keeps only layer inputs",
            "反向时重算：只保存每层输入",
        ),
        "attn_help" => (
            "attention kernel: eager stores batch·heads·s² scores",
            "注意力实现：eager 会保存 batch·heads·s² 的分数矩阵",
        ),
        "optim_help" => (
            "optimizer: AdamW keeps 8 bytes per trainable parameter (+4 while stepping)",
            "优化器：AdamW 每个可训练参数 8 字节（更新时再加 4）",
        ),
        "gpu" => ("GPU", "显卡"),
        "gpu_help" => (
            "the card to check against; prices are per GPU-hour with their source",
            "目标显卡；价格为每卡每小时并注明来源",
        ),
        "ngpu_help" => (
            "data-parallel GPUs (with ZeRO, states are sharded)",
            "数据并行卡数（配合 ZeRO 分片）",
        ),
        "ds_help" => (
            "DeepSpeed ZeRO stage, LLaMA-Factory's bundled configs",
            "DeepSpeed ZeRO 阶段（LLaMA-Factory 自带配置）",
        ),
        "tokens_help" => (
            "tokens per epoch, for the total time and cost",
            "每轮训练的 token 数，用于估算总时长和费用",
        ),
        "epochs_help" => ("epochs over the data", "训练轮数"),
        "price_help" => (
            "your own $/GPU-hour (default: cheapest listed)",
            "自定义每卡每小时价格（默认取最低报价）",
        ),
        "fits" => ("fits", "可以放下"),
        "does_not_fit" => ("does not fit", "显存不足"),
        "per_gpu_smi" => (
            "per GPU, as nvidia-smi shows it",
            "每卡峰值（nvidia-smi 口径）",
        ),
        "largest_batch" => ("largest batch that fits", "可容纳的最大批大小"),
        "longest_cutoff" => ("longest cutoff_len that fits", "可容纳的最长截断长度"),
        "time_cost" => ("Time and cost", "时长与费用"),
        "need_tokens" => (
            "set dataset_tokens for the total",
            "填写 dataset_tokens 以估算总时长",
        ),
        "compare" => (
            "Full / freeze / LoRA / QLoRA, same model and data",
            "全参 / 冻结 / LoRA / QLoRA 对比",
        ),
        "peak" => ("peak", "峰值"),
        "time" => ("time", "时长"),
        "cost" => ("cost", "费用"),
        "how" => ("How this is computed", "计算方法"),
        "how_text" => (
            "Peak = the largest of three moments of a training step: the forward/backward boundary (weights, optimizer states, autocast copies, saved activations, logits with their fp32 copies), the end of backward (all gradients) and the optimizer step (gradients + AdamW's temporaries); plus the allocator's slack and the CUDA context. Calibrated on measured H100 peaks: median error 4 % against nvidia-smi. Time = FLOPs per token ÷ (GPU bf16 peak × measured utilisation) + the optimizer step.",
            "峰值取训练一步中三个时刻的最大值：前向/反向交界（权重、优化器状态、autocast 副本、保存的激活、logits 及其 fp32 副本）、反向结束（全部梯度）、优化器更新（梯度 + AdamW 临时张量），再加上分配器余量与 CUDA 上下文。已用 H100 实测峰值校准：相对 nvidia-smi 的中位误差 4%。时长 = 每 token 计算量 ÷（显卡 bf16 峰值 × 实测利用率）+ 优化器更新时间。",
        ),
        "f_weights" => (
            "2 bytes/parameter in bf16; 4-bit: 0.5 byte + one scale per 64 weights (decoder linears only); fp32 master copies of trainable weights; bf16 autocast copies while they are used",
            "bf16 每参数 2 字节；4-bit：每参数 0.5 字节 + 每 64 个一个缩放（仅解码层线性层）；可训练参数 fp32 主副本；autocast bf16 副本",
        ),
        "f_adapter" => (
            "LoRA: rank × (in + out) per targeted module per layer (k/v use the GQA width), fp32; DoRA adds one magnitude per output",
            "LoRA：每层每个目标模块 秩 ×（输入 + 输出）（k/v 按 GQA 宽度），fp32；DoRA 每个输出再加一个幅度",
        ),
        "f_gradients" => (
            "one gradient per trainable parameter, same dtype; alive from backward to the optimizer step (during forward only with gradient accumulation)",
            "每个可训练参数一个梯度；从反向到优化器更新期间存在（梯度累积时前向也在）",
        ),
        "f_optimizer" => (
            "AdamW: 8 bytes per trainable parameter (m and v), +4 while stepping (foreach temporaries); 8-bit AdamW 2; SGD 0; Adafactor factored rows + columns",
            "AdamW：每个可训练参数 8 字节（m 和 v），更新时再加 4；8-bit AdamW 2；SGD 0；Adafactor 按行列分解",
        ),
        "f_activations" => (
            "checkpointing on: every layer's input (batch × length × hidden × 2 bytes) + one recomputed layer; off: ~(26·hidden + 8·intermediate) bytes per token per layer; eager attention adds 6 bytes × batch × heads × length²",
            "开启梯度检查点：每层输入（批 × 长度 × 隐藏维 × 2 字节）+ 一层重算；关闭：每 token 每层约 (26·隐藏维 + 8·中间维) 字节；eager 注意力再加 6 字节 × 批 × 头数 × 长度²",
        ),
        "f_logits" => (
            "11.7 bytes × batch × length × vocabulary: bf16 logits, the fp32 copy the loss makes, log-softmax and its gradient",
            "11.7 字节 × 批 × 长度 × 词表：bf16 logits、损失函数的 fp32 副本、log-softmax 及其梯度",
        ),
        "f_overhead" => (
            "cuBLAS workspaces 0.25 GB + allocator slack (20 % of the transient memory + 0.6 GB) + CUDA context 1.22 GiB, all measured on an H100",
            "cuBLAS 工作区 0.25 GB + 分配器余量（临时显存的 20% + 0.6 GB）+ CUDA 上下文 1.22 GiB，均在 H100 上实测",
        ),
        "download" => ("Download", "下载"),
        "every_gpu" => ("Every GPU in the catalog", "所有显卡是否放得下"),
        "size" => ("…or a size", "…或参数量"),
        "size_help" => (
            "a raw parameter count such as 7B or 500M: a Llama-shaped model of that size",
            "直接输入参数量（如 7B、500M），按 Llama 结构估算",
        ),
        "config_help" => (
            "paste a config.json: it replaces the catalog model (not carried by share links)",
            "粘贴 config.json，替代目录中的模型（不会写入分享链接）",
        ),
        "precision" => ("Precision", "精度"),
        "precision_help" => (
            "bf16/fp16 mixed: fp32 trainable weights and states; pure_bf16: everything bf16",
            "bf16/fp16 混合精度：可训练参数与优化器状态为 fp32；pure_bf16：全部 bf16",
        ),
        "alpha_help" => (
            "LoRA alpha (default 2 × rank): scaling only, no memory",
            "LoRA alpha（默认 2 × 秩）：只影响缩放，不占显存",
        ),
        "target_help" => (
            "`all` or a comma list such as q_proj,v_proj",
            "`all` 或逗号分隔的模块名，如 q_proj,v_proj",
        ),
        "dora_help" => (
            "DoRA: a magnitude vector per module and the weight norm in every forward",
            "DoRA：每个模块一个幅度向量，前向时计算权重范数",
        ),
        "rslora_help" => (
            "rank-stabilised scaling alpha/√r: no memory change",
            "rsLoRA 缩放 alpha/√r：不改变显存",
        ),
        "weights" => ("weights", "权重"),
        "adapter" => ("adapter", "适配器"),
        "gradients" => ("gradients", "梯度"),
        "optimizer" => ("optimizer", "优化器"),
        "activations" => ("activations", "激活"),
        "logits" => ("logits", "logits"),
        "overhead" => ("overhead", "其他开销"),
        _ => (key, key),
    };
    match lang {
        Lang::En => en,
        Lang::Zh => zh,
    }
}
