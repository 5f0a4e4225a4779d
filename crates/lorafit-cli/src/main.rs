//! The `lorafit` binary: a thin clap front end over lorafit-core and lorafit-train.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lorafit_core::estimate::{self, Estimate};
use lorafit_core::plan::{Plan, Settings, Zero};
use lorafit_core::{catalog, export};

/// Will a fine-tune fit, how long will it take, what will it cost.
#[derive(Parser, Debug)]
#[command(name = "lorafit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Estimate peak GPU memory, time and cost of a LLaMA-Factory config (Contract 2).
    Estimate {
        /// LLaMA-Factory YAML (the file `llamafactory-cli train` takes).
        config: PathBuf,
        /// Override a key: `--set lora_rank=16` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// The accelerate config the run is launched with (LLaMA-Factory's
        /// examples/accelerate/fsdp_config.yaml …): FSDP sharding and num_processes.
        #[arg(long, value_name = "ACCELERATE_YAML")]
        fsdp_config: Option<PathBuf>,
        /// Also write an SVG of the peak against cutoff_len and batch size.
        #[arg(long, value_name = "OUT.svg")]
        plot: Option<PathBuf>,
        /// Do not read the dataset: size every micro-batch at cutoff_len.
        #[arg(long)]
        no_data: bool,
    },
    /// Write the config back as LLaMA-Factory YAML (and the DeepSpeed JSON it names).
    Export {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Also write lorafit's own keys (gpu, num_gpus, …), which LLaMA-Factory rejects.
        #[arg(long)]
        lorafit_keys: bool,
        /// Print the DeepSpeed JSON for the config's ZeRO stage instead.
        #[arg(long)]
        deepspeed: bool,
    },
    /// Fine-tune with LoRA on a local HF checkpoint (Contract 3): PEFT adapter, trainer_log.jsonl,
    /// checkpoints every save_steps; Ctrl-C saves a checkpoint and stops.
    Train {
        /// LLaMA-Factory YAML.
        config: PathBuf,
        /// Override a key: `--set max_steps=100` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Write a random-weight HF checkpoint (config.json + model.safetensors) of the shape a
    /// config.json describes, copying tokenizer files that sit beside it: for trying `train`
    /// and measuring memory without downloading weights.
    RandomModel {
        /// A config.json, a directory holding one, or a catalog id (`lorafit models`).
        config: PathBuf,
        /// Output directory.
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List the model catalog (every id, variants and pre-quantized repos included).
    Models {
        /// Only this family (`qwen3`, `Qwen2.5`, `llama 3.1`) or model_type (`qwen3_moe`).
        #[arg(long)]
        family: Option<String>,
    },
    /// List the GPU catalog with prices.
    Gpus,
    /// Chat with the model (+ `adapter_name_or_path`) and `template` on the CPU, as
    /// `llamafactory-cli chat`: its generating keys (do_sample, temperature, top_p, top_k,
    /// repetition_penalty, max_new_tokens) and defaults, a KV cache, the answer streamed; a
    /// conversation on standard input unless `--prompt` gives one message.
    Chat {
        /// LLaMA-Factory YAML (model_name_or_path, adapter_name_or_path, template).
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// One user message: answer it and exit.
        #[arg(long)]
        prompt: Option<String>,
        /// Overrides the config's `max_new_tokens` (LLaMA-Factory's default: 1024).
        #[arg(long)]
        max_new_tokens: Option<usize>,
    },
    /// List LLaMA-Factory's chat templates (`template:`), with their tool format and whether they
    /// think (reasoning templates add an empty thought to answers without one).
    Templates,
}

/// `println!` / `print!` to stdout that end the process quietly when the reader has gone
/// (`lorafit models | head`), where the std macros panic on the broken pipe.
macro_rules! out {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` with [`out!`]'s handling of a closed stdout.
macro_rules! out_part {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// Write to stdout; a reader that has gone ends the process with status 0, any other failure
/// with an error.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

mod chat;
mod data_stats;
mod hub_cache;
mod train;

fn load_settings(path: &Path, sets: &[String]) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut s = Settings::from_yaml(&text).with_context(|| format!("in {}", path.display()))?;
    for a in sets {
        s.set_assignment(a)?;
    }
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    Ok(s)
}

/// Where `model_name_or_path`'s config.json was read from (None: the catalog or a raw size).
pub(crate) fn model_config_file(path: &Path, model: &str) -> Result<Option<PathBuf>> {
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(dir) = [PathBuf::from(model), base.join(model)]
        .into_iter()
        .find(|p| p.is_dir())
    {
        let f = dir.join("config.json");
        if !f.is_file() {
            bail!(
                "model_name_or_path `{model}` is a directory but {} cannot be read",
                f.display()
            );
        }
        return Ok(Some(f));
    }
    // A hub id: the machine's Hugging Face / ModelScope cache comes before the catalog.
    Ok(hub_cache::find(model).map(|(f, cache)| {
        eprintln!(
            "model: {model}'s config.json from {}: {}",
            cache.name(),
            f.display()
        );
        f
    }))
}

/// The datasets the config names whose dataset_info.json entry has an `images` or `videos`
/// column (unreadable entries are left to the dataset-aware estimate to report).
fn multimodal_datasets(base: &Path, settings: &Settings) -> Vec<lorafit_data::info::DatasetAttr> {
    let Some(names) = settings
        .str("dataset")
        .map(lorafit_data::load::dataset_names)
    else {
        return Vec::new();
    };
    let dir = lorafit_data::load::resolve(base, settings.str("dataset_dir").unwrap_or("data"));
    let Some((info_path, info)) = names
        .first()
        .and_then(|n| lorafit_data::info::read_info(&dir, n).ok())
    else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| lorafit_data::info::DatasetAttr::from_info(&info_path, &info, n).ok())
        .filter(|a| {
            a.columns.images.is_some() || a.columns.videos.is_some() || a.columns.audios.is_some()
        })
        .collect()
}

/// Rows of a multimodal dataset read for their media (headers only).
const MEDIA_ROWS: usize = 100_000;

/// A multimodal dataset's images and videos, read from their headers, set the vision plan:
/// the row with the most tokens counts. Without readable media, one image (video) per sample
/// is assumed, as the dataset's columns say.
fn dataset_media(base: &Path, settings: &Settings, plan: &mut lorafit_core::Plan) {
    use lorafit_core::arch::media::{AudioFile, SampleMedia, VideoFile};
    use lorafit_data::media::Video;
    if [
        "images_per_sample",
        "videos_per_sample",
        "audios_per_sample",
    ]
    .iter()
    .any(|k| settings.get(k).is_some())
    {
        return;
    }
    let dataset_dir =
        lorafit_data::load::resolve(base, settings.str("dataset_dir").unwrap_or("data"));
    let media_dir = settings.str("media_dir").map_or(dataset_dir.clone(), |m| {
        lorafit_data::load::resolve(base, m)
    });
    for attr in multimodal_datasets(base, settings) {
        let scan = match lorafit_data::media::scan(&attr, &media_dir, MEDIA_ROWS) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("dataset `{}`: media not read ({e})", attr.name);
                lorafit_data::media::MediaScan::default()
            }
        };
        let read = scan
            .rows
            .iter()
            .any(|r| !r.images.is_empty() || !r.videos.is_empty() || !r.audios.is_empty());
        let first_bad = scan
            .unreadable
            .first()
            .map(|(p, why)| format!(" (e.g. {p}: {why})"))
            .unwrap_or_default();
        if !read {
            let mut assumed = Vec::new();
            if attr.columns.images.is_some() {
                plan.vision.images_per_sample = 1;
                assumed.push("images_per_sample 1");
            }
            if attr.columns.videos.is_some() {
                plan.vision.videos_per_sample = 1;
                assumed.push("videos_per_sample 1");
            }
            if attr.columns.audios.is_some() {
                plan.vision.audios_per_sample = 1;
                assumed.push("audios_per_sample 1");
            }
            eprintln!(
                "dataset `{}`: lorafit read none of its media files{first_bad}: {} assumed (set images_per_sample / videos_per_sample / audios_per_sample to change it)",
                attr.name,
                assumed.join(", ")
            );
            continue;
        }
        let fps = plan.vision.video.fps;
        let rows: Vec<SampleMedia> = scan
            .rows
            .iter()
            .map(|r| SampleMedia {
                images: r.images.clone(),
                videos: r
                    .videos
                    .iter()
                    .map(|v| match *v {
                        Video::File(h) => VideoFile {
                            width: h.width,
                            height: h.height,
                            seconds: h.seconds,
                            frames: h.frames,
                            average_fps: h.average_fps,
                            presampled: false,
                        },
                        Video::Frames {
                            count,
                            width,
                            height,
                        } => VideoFile {
                            width,
                            height,
                            seconds: count as f64 / fps,
                            frames: count,
                            average_fps: fps,
                            presampled: true,
                        },
                    })
                    .collect(),
                audios: r
                    .audios
                    .iter()
                    .map(|a| AudioFile {
                        samples: a.samples,
                        rate: a.rate,
                    })
                    .collect(),
            })
            .collect();
        let (images, videos, audios) = rows.iter().fold((0, 0, 0), |(i, v, a), r| {
            (i + r.images.len(), v + r.videos.len(), a + r.audios.len())
        });
        let audios = if audios > 0 {
            format!(", {audios} audio(s)")
        } else {
            String::new()
        };
        eprintln!(
            "dataset `{}`: {images} image(s) and {videos} video(s){audios} in {} rows read from their headers{}; the row with the most image / video / audio tokens sets the estimate",
            attr.name,
            rows.len(),
            if scan.unreadable.is_empty() {
                String::new()
            } else {
                format!(", {} file(s) unreadable{first_bad}", scan.unreadable.len())
            }
        );
        plan.vision
            .dataset
            .get_or_insert_with(Vec::new)
            .extend(rows);
    }
}

/// The plan plus what only the binary can read: the model's config.json (a directory or a hub
/// cache), an accelerate config and a DeepSpeed file.
pub(crate) fn load_plan(
    path: &Path,
    settings: &Settings,
) -> Result<(Plan, Option<String>, Option<PathBuf>)> {
    let mut plan = settings.plan()?;
    let base = path.parent().unwrap_or(Path::new("."));
    dataset_media(base, settings, &mut plan);
    let config_file = model_config_file(path, &plan.model)?;
    let config_json = match &config_file {
        Some(f) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        None => None,
    };
    if let Some(acc) = plan.accelerate_config.clone() {
        let f = [PathBuf::from(&acc), base.join(&acc)]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("accelerate_config: cannot find `{acc}`"))?;
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        match Zero::from_accelerate_yaml(&text).with_context(|| format!("in {}", f.display()))? {
            Some((zero, gpus)) => {
                plan.zero = zero;
                if let Some(n) = gpus
                    && settings.get("num_gpus").is_none()
                {
                    plan.num_gpus = n;
                }
            }
            None => eprintln!(
                "warning: {} is neither an FSDP nor a DeepSpeed accelerate config: no sharding assumed",
                f.display()
            ),
        }
    }
    if let Some(ds) = plan
        .deepspeed
        .clone()
        .filter(|d| !d.trim_start().starts_with('{'))
    {
        let file = [PathBuf::from(&ds), base.join(&ds)]
            .into_iter()
            .find(|p| p.is_file());
        plan.zero = match file {
            Some(f) => {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                Zero::from_deepspeed_json(&text).with_context(|| format!("in {}", f.display()))?
            }
            None => match Zero::from_llamafactory_name(&ds) {
                Some(z) => z,
                None => bail!(
                    "deepspeed: `{ds}` is neither a readable file nor one of LLaMA-Factory's ds_z{{0,2,3}}[_offload]_config.json"
                ),
            },
        };
    }
    Ok((plan, config_json, config_file))
}

/// `lorafit export` of a config with `export_dir`: the LoRA adapter merged into its base.
fn export_merged(config: &Path, s: &Settings, export_dir: &str) -> Result<()> {
    let base = config.parent().unwrap_or(Path::new("."));
    let local = |p: &str| lorafit_data::load::resolve(base, p);
    let model = s
        .str("model_name_or_path")
        .context("`model_name_or_path` is missing")?;
    let model_dir = local(model);
    if !model_dir.join("config.json").is_file() {
        bail!(
            "`model_name_or_path: {model}`: merging needs the base checkpoint as a local directory ({} has no config.json)",
            model_dir.display()
        );
    }
    let adapter = s.str("adapter_name_or_path").context(
        "`export_dir` is set but `adapter_name_or_path` is missing: lorafit export merges a LoRA adapter into the base",
    )?;
    if adapter.contains(',') {
        bail!("`adapter_name_or_path: {adapter}`: lorafit merges one adapter at a time");
    }
    if let Some(ft) = s.str("finetuning_type").filter(|f| *f != "lora") {
        bail!("`finetuning_type: {ft}`: lorafit export merges LoRA adapters");
    }
    if s.get("quantization_bit").is_some() {
        bail!(
            "`quantization_bit` is set: merge the adapter into the unquantized base (as LLaMA-Factory asks)"
        );
    }
    let size = s.float("export_size").unwrap_or(5.0);
    let out = local(export_dir);
    eprintln!(
        "merging {adapter} into {} → {}",
        model_dir.display(),
        out.display()
    );
    let m = lorafit_train::merge::merge(&model_dir, &local(adapter), &out, size)?;
    eprintln!(
        "merged {} of {} tensors ({}, {}), {} file(s) in {}",
        m.merged,
        m.tensors,
        m.dtype,
        gib(m.total_bytes),
        m.files.len(),
        m.export_dir.display()
    );
    // A reward model's value head travels with it, as llamafactory-cli export copies it.
    if s.str("stage") == Some("rm") {
        let head = local(adapter).join(lorafit_train::value_head::FILE);
        if head.is_file() {
            let bytes =
                std::fs::read(&head).with_context(|| format!("reading {}", head.display()))?;
            write_atomically(&out.join(lorafit_train::value_head::FILE), &bytes)?;
            eprintln!("copied the value head to {}", out.display());
        } else {
            eprintln!(
                "warning: `stage: rm` but {} has no value head ({}); the export is the language model only",
                local(adapter).display(),
                lorafit_train::value_head::FILE
            );
        }
    }
    Ok(())
}

/// Write a file through a temporary name and a rename, so a reader never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

fn print_table(e: &Estimate, plan: &Plan, arch: &lorafit_core::ModelArch) {
    out!(
        "model        {} ({} parameters, {} trainable = {:.3} %)",
        e.model,
        e.total_params,
        e.trainable_params,
        100.0 * e.trainable_params as f64 / e.total_params.max(1) as f64
    );
    if let Some(sq) = &arch.stored_quant {
        out!(
            "base         pre-quantized: {} {}-bit, {:.3} bytes per linear weight",
            sq.method,
            sq.bits,
            sq.bytes_per_param
        );
    }
    if let Some(v) = &e.vision {
        let state = |trained: bool| if trained { "trained" } else { "frozen" };
        let videos = if v.videos_per_sample > 0 {
            format!(
                " + {} video(s) of {} frames = {} tokens",
                v.videos_per_sample, v.video_frames, v.video_tokens_per_sample
            )
        } else {
            String::new()
        };
        let audios = if v.audios_per_sample > 0 {
            format!(
                " + {} audio(s) = {} tokens",
                v.audios_per_sample, v.audio_tokens_per_sample
            )
        } else {
            String::new()
        };
        if v.takes_images {
            out!(
                "vision       tower {} parameters ({}), projector {} ({}); {} image(s) per sample = {} tokens{videos}{audios} of cutoff_len, {} tower patches",
                v.tower_params,
                state(v.tower_trained),
                v.projector_params,
                state(v.projector_trained),
                v.images_per_sample,
                v.image_tokens_per_sample,
                v.tower_patches_per_sample
            );
        } else {
            out!(
                "audio        encoder {} parameters ({}), projector {} ({}); {} audio(s) per sample = {} tokens of cutoff_len",
                v.tower_params,
                state(v.tower_trained),
                v.projector_params,
                state(v.projector_trained),
                v.audios_per_sample,
                v.audio_tokens_per_sample
            );
        }
    }
    let method = plan.describe();
    out!(
        "method       {method}, batch {} × {} tokens, grad. accumulation {}, {} GPU(s)",
        plan.batch_size,
        plan.cutoff_len,
        plan.grad_accum,
        plan.num_gpus
    );
    out!();
    out!("per-GPU memory at the peak ({:?})", e.peak_phase);
    for (name, v) in e.breakdown.parts() {
        let bar =
            "█".repeat(((v as f64 / e.peak_reserved_bytes.max(1) as f64) * 40.0).round() as usize);
        out!("  {name:<12} {:>12}  {bar}", gib(v));
    }
    out!(
        "  {:<12} {:>12}  (nvidia-smi; torch max_memory_allocated {}, reserved {})",
        "peak",
        gib(e.peak_reserved_bytes),
        gib(e.peak_allocated_bytes),
        gib(e.torch_reserved_bytes)
    );
    if e.host_ram_bytes > 0 {
        out!("  host RAM for offload: {}", gib(e.host_ram_bytes));
    }
    out!();
    match (&e.gpu, e.fits, e.gpu_memory_bytes) {
        (Some(g), Some(f), Some(m)) => {
            out!("fits on {g} ({}): {}", gib(m), if f { "yes" } else { "NO" });
            if let Some(bs) = estimate::largest_batch(arch, plan, m) {
                out!("  largest per_device_train_batch_size that fits: {bs}");
            }
            if let Some(cl) = estimate::longest_cutoff(arch, plan, m) {
                out!("  longest cutoff_len that fits: {cl}");
            }
        }
        _ => out!("fits: set `gpu` (e.g. --set gpu=RTX-4090) to check"),
    }
    out!(
        "speed        {:.0} tokens/s, {:.2} s per optimizer step (MFU {:.0} %)",
        e.tokens_per_second,
        e.step_seconds,
        e.mfu * 100.0
    );
    match (e.total_steps, e.total_seconds) {
        (Some(n), Some(s)) => out!("run          {n} steps, {}", duration(s)),
        _ => {
            out!("run          set dataset_tokens, max_samples or max_steps for the total time")
        }
    }
    if let Some(c) = e.cost_usd {
        out!(
            "cost         ${c:.2} at ${:.2}/GPU-hour",
            e.price_per_hour.unwrap_or(0.0)
        );
        for p in &e.costs {
            out!(
                "  {:<32} {:<11} ${:>8.2}/h  ${:>10.2}  ({}, {})",
                p.provider,
                p.kind,
                p.usd_per_hour,
                p.cost_usd,
                p.source,
                p.as_of
            );
        }
    }
    let options: Vec<_> = estimate::gpu_options(arch, plan)
        .into_iter()
        .filter(|o| o.fits)
        .take(5)
        .collect();
    if !options.is_empty() {
        out!();
        out!("cheapest GPUs that fit (cheapest listed price; >1 GPU assumes ZeRO-3)");
        for o in options {
            let cost = match (o.cost_usd, o.total_seconds) {
                (Some(c), Some(s)) => format!("${c:.2} for {}", duration(s)),
                _ => o
                    .usd_per_hour
                    .map(|p| format!("${p:.2}/h"))
                    .unwrap_or_else(|| "no price listed".into()),
            };
            out!(
                "  {:>2} × {:<14} peak {:>10}  {cost}",
                o.num_gpus,
                o.gpu,
                gib(o.peak_reserved_bytes)
            );
        }
    }
    if let Ok(m) = lorafit_core::lorafit_stack::lorafit_stack(arch, plan) {
        out!();
        out!("{}", lorafit_stack_line(&m));
    }
    for w in &e.warnings {
        out!("note: {w}");
    }
}

/// One line for `stack: lorafit`: what `lorafit train` itself holds at its peak (f32 on wgpu).
pub(crate) fn lorafit_stack_line(m: &lorafit_core::lorafit_stack::LorafitMemory) -> String {
    let mut line = format!(
        "lorafit train (this tool, f32): peak {} = weights {} + adapter & AdamW {} + activations {}",
        gib(m.peak_bytes),
        gib(m.weights_bytes),
        gib(m.adapter_bytes),
        gib(m.activation_bytes)
    );
    for n in &m.notes {
        line.push_str(&format!("\n  note: {n}"));
    }
    line
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Estimate {
            config,
            mut set,
            json,
            fsdp_config,
            plot,
            no_data,
        } => {
            if let Some(f) = fsdp_config {
                set.push(format!("accelerate_config={}", f.display()));
            }
            let settings = load_settings(&config, &set)?;
            let (mut plan, config_json, config_file) = load_plan(&config, &settings)?;
            let (arch, source) = estimate::resolve_model(&plan, config_json.as_deref())?;
            lorafit_core::memory::keep_largest_media_row(&arch, &mut plan);
            let stats = if no_data {
                Err("--no-data".to_string())
            } else {
                data_stats::read(&config, &settings, &plan, config_file.as_deref())?
            };
            if let Ok(st) = &stats {
                // The peak is the longest micro-batch's; the steps are the data's.
                plan.cutoff_len = st.longest_batch_tokens.max(1) as u64;
                if plan.max_samples.is_none() && plan.dataset_tokens.is_none() {
                    plan.max_samples = Some(st.examples as u64);
                }
            }
            let mut e = estimate::estimate(&arch, source, &plan)?;
            e.model_config_path = config_file.map(|f| f.display().to_string());
            if let Ok(st) = &stats {
                data_stats::apply_time(&mut e, &plan, st);
            }
            if json {
                let mut v = serde_json::to_value(&e)?;
                if let (Ok(st), Some(o)) = (&stats, v.as_object_mut()) {
                    o.insert("dataset".into(), serde_json::to_value(st)?);
                }
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "lorafit_stack".into(),
                        match lorafit_core::lorafit_stack::lorafit_stack(&arch, &plan) {
                            Ok(m) => serde_json::to_value(m)?,
                            Err(why) => serde_json::json!({ "unavailable": why }),
                        },
                    );
                }
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                match &stats {
                    Ok(st) => data_stats::print(st),
                    Err(why) if why != "--no-data" && settings.str("dataset").is_some() => {
                        eprintln!(
                            "note: {why}; every micro-batch is assumed to be cutoff_len ({}) tokens",
                            plan.cutoff_len
                        )
                    }
                    Err(_) => {}
                }
                print_table(&e, &plan, &arch);
            }
            if let Some(out) = plot {
                let svg = lorafit_core::chart::peak_chart_svg(&arch, &plan)?;
                write_atomically(&out, svg.as_bytes())?;
                eprintln!("wrote {}", out.display());
            }
        }
        Command::Export {
            config,
            set,
            lorafit_keys,
            deepspeed,
        } => {
            let settings = load_settings(&config, &set)?;
            if let Some(dir) = settings.str("export_dir").filter(|_| !deepspeed) {
                // `llamafactory-cli export`'s job: merge the adapter into the base.
                return export_merged(&config, &settings, dir);
            }
            if deepspeed {
                let (plan, _, _) = load_plan(&config, &settings)?;
                out!("{}", export::to_deepspeed_json(&plan.zero));
            } else {
                out_part!("{}", export::to_llamafactory_yaml(&settings, lorafit_keys));
            }
        }
        Command::Train { config, set } => {
            let settings = load_settings(&config, &set)?;
            return train::run(&config, &settings);
        }
        Command::RandomModel { config, out, seed } => {
            let file = if config.is_dir() {
                config.join("config.json")
            } else {
                config.clone()
            };
            // A catalog id (e.g. Qwen/Qwen2.5-0.5B) when no such file exists.
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => match catalog::find_model(&config.display().to_string()) {
                    Ok(m) => serde_json::to_string_pretty(&m.config)?,
                    Err(_) => {
                        return Err(anyhow::Error::new(e).context(format!(
                            "{} is neither a readable config.json nor a catalog id (see `lorafit models`)",
                            file.display()
                        )));
                    }
                },
            };
            let cfg = lorafit_train::random::write_random_checkpoint(&out, &text, seed)?;
            let src = file.parent().unwrap_or(Path::new("."));
            for name in ["tokenizer.json", "tokenizer_config.json"] {
                if src.join(name).is_file() && src != out.as_path() {
                    std::fs::copy(src.join(name), out.join(name))
                        .with_context(|| format!("copying {name} into {}", out.display()))?;
                }
            }
            eprintln!(
                "wrote {} ({} parameters, random weights) into {}",
                cfg.arch.model_type,
                cfg.arch.total_params(),
                out.display()
            );
        }
        Command::Models { family } => {
            let squash = |s: &str| s.to_ascii_lowercase().replace([' ', '-', '_'], "");
            let wanted = family.as_deref().map(squash);
            let mut shown = 0;
            for m in catalog::models() {
                if let Some(w) = &wanted {
                    let model_type = m
                        .config
                        .get("model_type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("");
                    if squash(&m.family) != *w && squash(model_type) != *w {
                        continue;
                    }
                }
                shown += 1;
                let p = m.arch().map(|a| a.total_params()).unwrap_or(0);
                let quant = m
                    .config
                    .get("quantization_config")
                    .and_then(|q| q.get("quant_method"))
                    .and_then(|q| q.as_str())
                    .map(|q| format!("  ({q})"))
                    .unwrap_or_default();
                out!(
                    "{:<56} {:<20} {:>7.2} B{quant}",
                    m.id,
                    m.family,
                    p as f64 / 1e9
                );
            }
            if shown == 0 {
                bail!(
                    "no catalog model of family `{}`; families: {}",
                    family.unwrap_or_default(),
                    catalog::families().join(", ")
                );
            }
        }
        Command::Chat {
            config,
            set,
            prompt,
            max_new_tokens,
        } => {
            let settings = load_settings(&config, &set)?;
            chat::run(&config, &settings, prompt.as_deref(), max_new_tokens)?;
        }
        Command::Templates => {
            let reg = lorafit_data::template::registry()?;
            out!("# {} templates from {}", reg.templates.len(), reg.source);
            for (name, t) in &reg.templates {
                let tools = t.format_tools.tool_format.as_deref().unwrap_or("default");
                let rendered = lorafit_data::tools::TOOL_FORMATS.contains(&tools);
                let mut tags = Vec::new();
                if t.is_reasoning() {
                    tags.push("thinking".to_string());
                }
                if t.efficient_eos {
                    tags.push("efficient_eos".into());
                }
                if t.mm_plugin.image_token.is_some() {
                    tags.push("vision (text part)".into());
                }
                out!(
                    "{name:<22} tools: {tools:<10}{} {}",
                    if rendered { "" } else { " (not rendered)" },
                    tags.join(", ")
                );
            }
        }
        Command::Gpus => {
            for g in catalog::gpus() {
                let price = g
                    .cheapest_price()
                    .map(|p| format!("from ${:.2}/h ({})", p.usd_per_hour, p.provider))
                    .unwrap_or_default();
                out!(
                    "{:<14} {:<40} {:>9} {:>6.0} TFLOPS  {price}",
                    g.id,
                    g.name,
                    gib(g.memory_bytes()),
                    g.bf16_tflops
                );
            }
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
