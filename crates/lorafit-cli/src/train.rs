//! `lorafit train`: the estimate for the run, a progress bar (or one line per logging step when
//! stderr is not a terminal), Ctrl-C → checkpoint and exit, and the measured peak memory at the end.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use lorafit_core::estimate;
use lorafit_core::plan::Settings;
use lorafit_train::data::Encoded;
use lorafit_train::trainer::process_peak_rss_bytes;
use lorafit_train::{Model, Outcome, TrainArgs, Trainer, data, make_device};

use crate::{gib, load_plan, lorafit_stack_line};

pub fn run(config: &Path, settings: &Settings) -> Result<()> {
    let base = config.parent().unwrap_or(Path::new("."));
    let args = TrainArgs::from_settings(settings, base)?;

    // lorafit-core's estimate for the same keys (what PyTorch + PEFT would need on a CUDA GPU).
    let resolved = load_plan(config, settings).and_then(|(mut plan, config_json, _)| {
        let (arch, source) = estimate::resolve_model(&plan, config_json.as_deref())?;
        lorafit_core::memory::keep_largest_media_row(&arch, &mut plan);
        Ok((arch, source, plan))
    });
    let estimate = match &resolved {
        Ok((arch, source, plan)) => estimate::estimate(arch, *source, plan).map_err(Into::into),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    match &estimate {
        Ok(e) => eprintln!(
            "estimate (lorafit-core, PyTorch+PEFT on CUDA): peak allocated {}, reserved {} per GPU; {} trainable parameters",
            gib(e.peak_allocated_bytes),
            gib(e.peak_reserved_bytes),
            e.trainable_params
        ),
        Err(err) => eprintln!("estimate unavailable: {err:#}"),
    }

    if let Some(lorafit_train::quant::QuantSpec::Half(kind)) = args.quant {
        let f16 = kind == lorafit_train::quant_ops::Half::F16;
        eprintln!(
            "note: {} — the decoder's linear weights (and an untied embedding) are stored {} on the device (2 bytes per parameter); {}; activations, norms, softmax, the loss, LoRA, AdamW and lm_head are f32",
            if f16 { "fp16" } else { "bf16" },
            if f16 { "f16" } else { "bf16" },
            if f16
                && matches!(
                    args.backend,
                    lorafit_train::Backend::Wgpu | lorafit_train::Backend::Vulkan
                )
            {
                "their products run in f16 (f32 accumulators, each input scaled per tensor) where the adapter has shader-f16, else in f32"
            } else if f16 {
                "their products widen them to f32"
            } else {
                "their products widen them to f32 (WGSL has no bf16 arithmetic)"
            },
        );
    }
    let device = make_device(args.backend, args.gradient_checkpointing)?;
    eprintln!(
        "loading {} on {}{}",
        args.model_dir.display(),
        args.backend.name(),
        runtime_note(args.backend)
    );
    let model = Model::load_quantized(&args.model_dir, &device, args.quant)
        .with_context(|| format!("loading {}", args.model_dir.display()))?;
    let (data, report) = if args.dpo.is_some() || args.stage == "rm" {
        let (p, r) = data::load_pairs_report(&args)?;
        (Encoded::Pairs(p), r)
    } else if args.kto.is_some() {
        let (f, r) = data::load_feedback_report(&args)?;
        (Encoded::Feedback(f), r)
    } else {
        let (e, r) = data::load_dataset_report(&args)?;
        (Encoded::Examples(e), r)
    };
    for (name, rows) in &report.rows {
        eprintln!("dataset {name}: {rows} rows");
    }
    if !report.dropped.is_empty() {
        // LLaMA-Factory skips these rows with a warning each; say how many and why.
        eprintln!(
            "warning: {} rows dropped, as LLaMA-Factory drops them:",
            report.dropped.len()
        );
        for d in report.dropped.iter().take(5) {
            eprintln!("  {} row {}: {}", d.dataset, d.row, d.reason);
        }
        if report.dropped.len() > 5 {
            eprintln!("  … and {} more", report.dropped.len() - 5);
        }
    }
    let (data, eval) = data::split_eval_data(&args, data)?;
    let n_eval = match &eval {
        Encoded::Examples(v) => v.len(),
        Encoded::Pairs(v) => v.len(),
        Encoded::Feedback(v) => v.len(),
    };
    if n_eval > 0 {
        eprintln!(
            "{n_eval} {} for the eval loss{}",
            match &eval {
                Encoded::Pairs(_) => "pairs",
                _ => "examples",
            },
            if args.eval.is_none() {
                " (held out by val_size; eval_strategy is no, so never evaluated)"
            } else {
                ""
            }
        );
    }
    // lorafit's own memory model for this run, at the longest micro-batch the data makes (a
    // batch is padded to its longest row, so that is the longest row).
    let longest = match &data {
        Encoded::Examples(v) => v.iter().map(|e| e.input_ids.len()).max(),
        Encoded::Pairs(v) => v
            .iter()
            .map(|p| p.chosen.input_ids.len().max(p.rejected.input_ids.len()))
            .max(),
        Encoded::Feedback(v) => v
            .iter()
            .map(|f| f.example.input_ids.len().max(f.kl.input_ids.len()))
            .max(),
    };
    let own = resolved.as_ref().ok().and_then(|(arch, _, plan)| {
        let mut plan = plan.clone();
        if let Some(l) = longest {
            plan.cutoff_len = plan.cutoff_len.min(l.max(1) as u64);
        }
        lorafit_core::lorafit_stack::lorafit_stack(arch, &plan).ok()
    });
    if let Some(m) = &own {
        eprintln!("{}", lorafit_stack_line(m));
    }
    let trainer = match data {
        Encoded::Examples(examples) => Trainer::new(args, &model, examples)?,
        Encoded::Pairs(pairs) => Trainer::new_pairs(args, &model, pairs)?,
        Encoded::Feedback(feedback) => Trainer::new_feedback(args, &model, feedback)?,
    };
    let mut trainer = trainer.with_eval_data(eval);
    for c in &trainer.cleaned {
        eprintln!("output_dir: {c}");
    }
    eprintln!(
        "{} examples, {} optimizer steps{}, {} trainable parameters (LoRA r={}), output in {}",
        trainer.num_examples(),
        trainer.total_steps,
        if trainer.start_step() > 0 {
            format!(" (resuming after step {})", trainer.start_step())
        } else {
            String::new()
        },
        trainer.adapter.num_params(),
        trainer.adapter.spec().rank,
        trainer.args.output_dir.display()
    );

    let stop = trainer.stop_flag();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to quit now)"
        );
    })
    .context("installing the Ctrl-C handler")?;

    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new(trainer.total_steps);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_position(trainer.start_step());
        b
    } else {
        ProgressBar::hidden()
    };
    let logging = trainer.args.logging_steps;
    let summary = trainer.run(|s| {
        let mem = s
            .memory_bytes
            .or_else(process_peak_rss_bytes)
            .map(gib)
            .unwrap_or_default();
        let msg = format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s mem {mem}",
            s.loss, s.lr, s.tokens_per_second
        );
        if tty {
            bar.set_position(s.step);
            bar.set_message(msg);
        } else if s.step % logging == 0 || s.step == s.total_steps {
            eprintln!("step {}/{} {msg}", s.step, s.total_steps);
        }
    });
    bar.finish_and_clear();
    let summary = summary?;
    let measured = match summary.peak_memory_bytes {
        Some(b) => format!(
            "{} (device memory in use, polled at the end of each forward and backward)",
            gib(b)
        ),
        None => match process_peak_rss_bytes() {
            Some(b) => format!(
                "{} (process peak RSS; this backend reports no device pool)",
                gib(b)
            ),
            None => "not available on this backend".into(),
        },
    };
    let mut line = format!("peak memory: measured {measured}");
    if let (Some(m), Some(b)) = (&own, summary.peak_memory_bytes) {
        line.push_str(&format!(
            "; lorafit's model {} ({:+.1} %)",
            gib(m.peak_bytes),
            100.0 * (m.peak_bytes as f64 / b.max(1) as f64 - 1.0)
        ));
    }
    if let Ok(e) = &estimate {
        line.push_str(&format!(
            "; estimate for PyTorch+PEFT {}",
            gib(e.peak_allocated_bytes)
        ));
    }
    eprintln!("{line}");
    if let Some(note) = quant_kernel_note(&model.q4_tuner.choices()) {
        eprintln!("{note}");
    }
    match summary.outcome {
        Outcome::Finished => {
            eprintln!(
                "done: adapter_model.safetensors + adapter_config.json in {}",
                summary.output_dir.display()
            );
            Ok(())
        }
        Outcome::Interrupted { step, checkpoint } => {
            eprintln!(
                "stopped after step {step}; resume with `--set resume_from_checkpoint={}`",
                checkpoint.display()
            );
            std::process::exit(130);
        }
    }
}

/// What `quant_kernel` chose for the run's 4-bit products (nothing when none ran through the
/// WGSL kernels): `4-bit products: dequantize then matmul for 5 shapes, fused for 3 (…)`.
fn quant_kernel_note(choices: &[lorafit_train::quant_tune::Choice]) -> Option<String> {
    use lorafit_train::quant_tune::Q4Path;
    if choices.is_empty() {
        return None;
    }
    let n = |p: Q4Path| choices.iter().filter(|c| c.path == p).count();
    let measured = choices
        .iter()
        .filter_map(|c| Some((c.fused_us?, c.dequantize_us?)))
        .fold((0, 0), |(f, d), (cf, cd)| (f + cf, d + cd));
    let mut note = format!(
        "4-bit products: dequantize then matmul for {} shapes, fused for {}",
        n(Q4Path::Dequantize),
        n(Q4Path::Fused)
    );
    if measured.0 > 0 {
        note.push_str(&format!(
            " (measured once per shape: fused {:.1} ms, dequantize {:.1} ms in all; quant_kernel fixes it)",
            measured.0 as f64 / 1e3,
            measured.1 as f64 / 1e3
        ));
    }
    Some(note)
}

/// Which compiler serves a wgpu / vulkan run: ` (wgpu<spirv>, 3 cooperative-matrix shapes)`.
fn runtime_note(backend: lorafit_train::Backend) -> String {
    #[cfg(feature = "wgpu")]
    if matches!(
        backend,
        lorafit_train::Backend::Wgpu | lorafit_train::Backend::Vulkan
    ) && let Some(r) = lorafit_train::wgpu_runtime()
    {
        return if r.cooperative_matrices > 0 {
            format!(
                " ({}, {} cooperative-matrix shapes)",
                r.name, r.cooperative_matrices
            )
        } else {
            format!(" ({})", r.name)
        };
    }
    let _ = backend;
    String::new()
}
