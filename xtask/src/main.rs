//! `cargo xtask …`: the project's automation. `test` installs what is missing and runs every
//! test; `validation` regenerates docs/validation.md from the measured points.

use std::process::Command;

use anyhow::{Context, Result, bail};

mod fuzz;
mod serve;
mod vulkan;
use lorafit_core::validation::{self, Compared};
use serve::{serve_dir, serve_on};

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Install what the tests need, each only if missing.
fn setup() -> Result<()> {
    // Mesa's lavapipe: a real Vulkan device on the CPU for the WGSL kernel tests.
    let has_lavapipe = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp"))
        })
        .unwrap_or(false);
    if !has_lavapipe {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "mesa-vulkan-drivers", "libvulkan1"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let targets =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

fn test() -> Result<()> {
    setup()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // lorafit-core must stay pure: prove it builds for the browser.
    run(Command::new(&cargo).args([
        "check",
        "-p",
        "lorafit-core",
        "--target",
        "wasm32-unknown-unknown",
    ]))?;
    run(Command::new(&cargo).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new(&cargo).args(["test", "--workspace", "--all-targets"]))?;
    // The same trainer on cubecl's SPIR-V compiler (`--features vulkan`), on a newer lavapipe.
    vulkan::tests(&cargo)?;
    wasm_component_tests()?;
    e2e()?;
    // A short smoke run of each fuzz target (the long runs are in docs/fuzzing.md).
    fuzz::smoke()
}

/// The web crate's wasm-bindgen-test component tests, in headless Chromium.
fn wasm_component_tests() -> Result<()> {
    setup_browser()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if output(Command::new("wasm-bindgen-test-runner").arg("--version"))
        .is_none_or(|v| !v.contains("0.2.130"))
    {
        run(Command::new(&cargo).args(["install", "wasm-bindgen-cli", "--version", "0.2.130"]))?;
    }
    run(Command::new(&cargo)
        .current_dir(root())
        .args([
            "test",
            "-p",
            "lorafit-web",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", "/usr/bin/chromedriver"))
}

fn pct(x: f64) -> String {
    format!("{:+.1} %", x * 100.0)
}

fn gib(x: f64) -> String {
    format!("{:.2}", x / (1u64 << 30) as f64)
}

fn describe(c: &Compared) -> String {
    let k = &c.point.config;
    let get = |key: &str| {
        k.get(key)
            .map(|v| v.to_string().trim_matches('"').to_string())
    };
    let mut method = get("finetuning_type").unwrap_or_default();
    if let Some(q) = get("quantization_bit") {
        method = format!("qlora{q}");
    }
    if get("lora_target").is_some_and(|t| t != "all") {
        method.push_str(&format!(
            " r{} {}",
            get("lora_rank").unwrap_or_default(),
            get("lora_target").unwrap_or_default()
        ));
    }
    if get("use_dora").as_deref() == Some("true") {
        method.push_str(" dora");
    }
    if get("pure_bf16").as_deref() == Some("true") {
        method.push_str(" pure_bf16");
    }
    if let Some(o) = get("optim").filter(|o| o != "adamw_torch") {
        method.push_str(&format!(" {o}"));
    }
    let gc = if get("disable_gradient_checkpointing").as_deref() == Some("true") {
        "off"
    } else {
        "on"
    };
    let attn = if get("flash_attn").as_deref() == Some("disabled") {
        "eager"
    } else {
        "sdpa"
    };
    format!(
        "{} | {method} | {}×{} | {gc} | {attn}",
        get("model_name_or_path").unwrap_or_default(),
        get("per_device_train_batch_size").unwrap_or("1".into()),
        get("cutoff_len").unwrap_or_default(),
    )
}

fn validation_report() -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let points = validation::parse_points(validation::MEASURED_H100)?;
    let compared: Vec<Compared> = points
        .iter()
        .map(validation::compare)
        .collect::<Result<_, _>>()?;
    writeln!(
        out,
        "<!-- generated by `cargo xtask validation > docs/validation.md`; do not edit by hand -->"
    )?;
    writeln!(
        out,
        "# Validation: lorafit's memory model against measured peaks\n"
    )?;
    writeln!(
        out,
        "Every point below was measured by `scripts/measure_torch.py` on the lent NVIDIA H100 80GB HBM3"
    )?;
    writeln!(
        out,
        "(torch 2.11.0+cu130, transformers 5.17.0, peft 0.21.0, bitsandbytes 0.50.2) on 2026-11-23: a model"
    )?;
    writeln!(
        out,
        "built from the catalog's config.json with random weights, HF Trainer with bf16 autocast, trainable"
    )?;
    writeln!(
        out,
        "parameters in fp32 (what LLaMA-Factory does), 4 steps of random tokens at exactly `cutoff_len`, peaks"
    )?;
    writeln!(
        out,
        "over steps 2–4. `allocated` is `torch.cuda.max_memory_allocated()`; `smi` is"
    )?;
    writeln!(
        out,
        "`torch.cuda.max_memory_reserved()` + the CUDA context (nvidia-smi used − reserved, 1.22 GiB on every"
    )?;
    writeln!(
        out,
        "run), i.e. what nvidia-smi shows. The data: `crates/lorafit-core/data/validation/measured_h100.jsonl`;"
    )?;
    writeln!(
        out,
        "the test `validation_against_h100_measurements` asserts the bounds below on every `cargo xtask test`.\n"
    )?;
    writeln!(
        out,
        "The memory model's coefficients (crates/lorafit-core/src/memory.rs, marked *calibrated*) were fitted"
    )?;
    writeln!(
        out,
        "on the `tune` points only; the `holdout` points (other model families — Qwen3, Mistral — and other"
    )?;
    writeln!(
        out,
        "settings: rank-64 q/v-only LoRA, freeze tuning, SGD) were never used to set a coefficient.\n"
    )?;
    writeln!(out, "## Summary\n")?;
    writeln!(
        out,
        "| split | points | allocated: median / max abs. error | nvidia-smi: median / max | LLaMA-Factory table: median / max | gpu_poor: median / max |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for split in ["tune", "holdout"] {
        let c: Vec<&Compared> = compared.iter().filter(|c| c.point.split == split).collect();
        let (ma, xa) = validation::median_max(c.iter().map(|c| c.err_allocated()));
        let (ms, xs) = validation::median_max(c.iter().map(|c| c.err_smi()));
        let (ml, xl) = validation::median_max(c.iter().map(|c| c.err_llamafactory()));
        let (mg, xg) = validation::median_max(c.iter().map(|c| c.err_gpu_poor()));
        writeln!(
            out,
            "| {split} | {} | {:.1} % / {:.1} % | {:.1} % / {:.1} % | {:.1} % / {:.1} % | {:.1} % / {:.1} % |",
            c.len(),
            ma * 100.0,
            xa * 100.0,
            ms * 100.0,
            xs * 100.0,
            ml * 100.0,
            xl * 100.0,
            mg * 100.0,
            xg * 100.0
        )?;
    }
    let (mt, xt) = validation::median_max(compared.iter().map(|c| c.err_tokens()));
    writeln!(
        out,
        "\nTokens/s (all points, H100 bf16 peak 989 TFLOP/s × the MFU curve in throughput.rs): median {:.1} %, max {:.1} %.",
        mt * 100.0,
        xt * 100.0
    )?;
    writeln!(
        out,
        "\nThe baselines are compared with the nvidia-smi figure, which is what their tables claim to predict."
    )?;
    writeln!(
        out,
        "LLaMA-Factory's README table gives GB per billion parameters (18 / 8 / 2 / 1 / 0.5) whatever the"
    )?;
    writeln!(
        out,
        "batch, length, rank or vocabulary; gpu_poor's formulas (src/App.js) ignore GQA, tied embeddings and"
    )?;
    writeln!(
        out,
        "the logits, and scale activations by 0.15 under gradient checkpointing. Both are re-derived in"
    )?;
    writeln!(out, "crates/lorafit-core/src/baselines.rs.\n")?;
    writeln!(
        out,
        "## Every point (GiB; errors are estimate / measured − 1)\n"
    )?;
    writeln!(
        out,
        "| id | split | model | method | batch×len | ckpt | attn | measured allocated | lorafit | err | measured smi | lorafit | err | LLaMA-Factory | err | gpu_poor | err | tok/s measured | lorafit | err |"
    )?;
    writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for c in &compared {
        let m = &c.point.measured;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
            c.point.id,
            c.point.split,
            describe(c),
            gib(m.peak_allocated_bytes as f64),
            gib(c.est_allocated as f64),
            pct(c.err_allocated()),
            gib(c.meas_smi as f64),
            gib(c.est_smi as f64),
            pct(c.err_smi()),
            gib(c.llamafactory_bytes),
            pct(c.err_llamafactory()),
            gib(c.gpu_poor_bytes),
            pct(c.err_gpu_poor()),
            m.tokens_per_second,
            c.est_tokens_per_second,
            pct(c.err_tokens())
        )?;
    }
    Ok(out)
}

fn published_report() -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    writeln!(
        out,
        "\n## Published points (not used for fitting; the test `published_longest_context_points_within_25_percent` asserts ≤ 25 %)\n"
    )?;
    writeln!(
        out,
        "The longest `cutoff_len` that fits, as published, against lorafit's `longest_cutoff` for the same"
    )?;
    writeln!(out, "memory (GB taken as 10⁹ bytes of nvidia-smi total).\n")?;
    let mut errs = Vec::new();
    writeln!(
        out,
        "| id | VRAM | published longest length | lorafit | error | source |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for line in
        include_str!("../../crates/lorafit-core/data/validation/published_max_context.jsonl")
            .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let plan = lorafit_core::validation::settings_from_config(
            v["config"].as_object().context("config")?,
        )?
        .plan()?;
        let (arch, _) = lorafit_core::estimate::resolve_model(&plan, None)?;
        let budget = (v["vram_gb"].as_f64().context("vram")? * 1e9) as u64;
        let ours = lorafit_core::estimate::longest_cutoff(&arch, &plan, budget).unwrap_or(0);
        let theirs = v["max_cutoff_len"].as_f64().context("len")?;
        errs.push(ours as f64 / theirs - 1.0);
        writeln!(
            out,
            "| {} | {} GB | {theirs} | {ours} | {} | {} |",
            v["id"].as_str().unwrap_or(""),
            v["vram_gb"],
            pct(ours as f64 / theirs - 1.0),
            v["source"].as_str().unwrap_or("")
        )?;
    }
    let lo = errs.iter().copied().fold(f64::INFINITY, f64::min) * 100.0;
    let hi = errs.iter().copied().fold(f64::NEG_INFINITY, f64::max) * 100.0;
    writeln!(
        out,
        "\nlorafit predicts {lo:.0}–{hi:.0} % longer contexts than this table. It was measured in 2024 with the"
    )?;
    writeln!(
        out,
        "transformers of the day, whose Llama forward upcast the logits to fp32 and kept them (`logits.float()`"
    )?;
    writeln!(
        out,
        "inside the model) besides the loss's own fp32 copy — about 4 bytes more per logit element than the"
    )?;
    writeln!(
        out,
        "transformers 5.17 we measured, where the logits are ~70 % of memory at these lengths. That would account"
    )?;
    writeln!(
        out,
        "for the gap, but we have not re-run that old stack, so the explanation is a hypothesis."
    )?;
    Ok(out)
}

fn published_peaks_report() -> Result<String> {
    use lorafit_core::validation;
    use std::fmt::Write;
    let mut out = String::new();
    writeln!(
        out,
        "\n## Published vision-language and MoE peaks (not used for fitting; the test `published_vision_language_and_moe_peaks_within_25_percent` asserts ≤ 25 %)\n"
    )?;
    writeln!(
        out,
        "ms-swift's example scripts print torch's `max_memory_reserved` per GPU (its `memory(GiB)` log field,"
    )?;
    writeln!(
        out,
        "`get_max_reserved_memory`); here each is in LLaMA-Factory's keys against lorafit's torch-reserved figure."
    )?;
    writeln!(
        out,
        "The scripts do not give sample lengths or image sizes: the `assumed` column says what was taken. A"
    )?;
    writeln!(
        out,
        "model-parallel run (`device_map` over the GPUs) is compared as the sum over its GPUs.\n"
    )?;
    writeln!(
        out,
        "| id | GPUs | published (GiB) | lorafit (GiB) | error | assumed | source |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    let points = validation::parse_published(validation::PUBLISHED_PEAKS)?;
    for p in &points {
        let estimate = p.estimate_reserved()?;
        let ours = estimate as f64 / (1u64 << 30) as f64;
        let published = p.published_bytes() / (1u64 << 30) as f64;
        writeln!(
            out,
            "| {} | {}{} | {published:.0} | {ours:.2} | {} | {} | {} |",
            p.id,
            p.gpus,
            if p.model_parallel { " (sum)" } else { "" },
            pct(p.error(estimate)),
            p.assumed,
            p.source
        )?;
    }
    Ok(out)
}

/// docs/validation.md: the generated comparison and published points, then the hand-written
/// notes kept in docs/validation-notes.md (regenerating never drops them).
fn validation_markdown() -> Result<String> {
    Ok(format!(
        "{}{}{}\n{}",
        validation_report()?,
        published_report()?,
        published_peaks_report()?,
        include_str!("../../docs/validation-notes.md")
    ))
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Build the static site into dist/: the yew crate for wasm32, wasm-bindgen, wasm-opt when present.
fn web() -> Result<std::path::PathBuf> {
    setup()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = root();
    // The page's budget is 300 KB gzipped: `-Zlocation-detail=none` drops the file / line / column
    // strings of every panic location (the page panics nowhere it can recover from, and
    // `panic = "abort"` prints none of them), 4 KB gzipped. A -Z flag on the stable toolchain
    // needs RUSTC_BOOTSTRAP, as the fuzz targets do.
    run(Command::new(&cargo)
        .current_dir(&root)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            "-Zlocation-detail=none",
        )
        .args([
            "build",
            "-p",
            "lorafit-web",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "web",
        ]))?;
    let wasm = root.join("target/wasm32-unknown-unknown/web/lorafit_web.wasm");
    let dist = root.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(&dist)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .typescript(false)
        .generate(&dist)
        .map_err(|e| anyhow::anyhow!("wasm-bindgen: {e}"))?;
    let bg = dist.join("lorafit_web_bg.wasm");
    let wasm_opt = root.join("target/npm/node_modules/.bin/wasm-opt");
    if wasm_opt.exists() {
        run(Command::new(&wasm_opt)
            .args([
                "-Oz",
                "--converge",
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "-o",
            ])
            .arg(&bg)
            .arg(&bg))?;
    } else {
        eprintln!(
            "xtask: wasm-opt not found (cargo xtask setup-web installs it); the wasm is larger than it needs to be"
        );
    }
    std::fs::copy(root.join("index.html"), dist.join("index.html"))?;
    let size = std::fs::metadata(&bg)?.len();
    eprintln!(
        "xtask: built {} (wasm {:.0} KiB)",
        dist.display(),
        size as f64 / 1024.0
    );
    Ok(dist)
}

/// npm's binaryen (Debian's is too old), into target/npm, only if missing.
fn setup_web() -> Result<()> {
    let root = root();
    if !root.join("target/npm/node_modules/.bin/wasm-opt").exists() {
        std::fs::create_dir_all(root.join("target/npm"))?;
        run(Command::new("npm")
            .current_dir(root.join("target/npm"))
            .args(["install", "--no-audit", "--no-fund", "binaryen@132"]))?;
    }
    Ok(())
}

/// Install Debian's chromium and chromium-driver if either is missing (root on these machines).
fn setup_browser() -> Result<()> {
    if output(Command::new("chromium").arg("--version")).is_none()
        || output(Command::new("chromedriver").arg("--version")).is_none()
    {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// Render `url` in headless Chromium and return the DOM after the page's scripts ran.
fn chromium_dom(url: &str, profile: &std::path::Path) -> Result<String> {
    let out = Command::new("chromium")
        .arg("--lang=en-US")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .context("cannot start chromium")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn attr_after(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let a = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[a..a + tag[a..].find('"')?].to_string())
}

/// A minimal W3C WebDriver client over plain HTTP (chromedriver on loopback).
struct WebDriver {
    port: u16,
    session: String,
    child: std::process::Child,
}

fn http_json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    // Read the headers, then exactly Content-Length bytes (chromedriver may keep the socket open).
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .context("WebDriver answer without Content-Length")?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let body = text.as_str();
    let json_start = body.find('{').unwrap_or(0);
    let json_end = body.rfind('}').map(|i| i + 1).unwrap_or(body.len());
    let v: serde_json::Value = serde_json::from_str(&body[json_start..json_end])
        .with_context(|| format!("WebDriver answered {text}"))?;
    if let Some(err) = v["value"].get("error") {
        bail!("WebDriver {method} {path}: {err} {}", v["value"]["message"]);
    }
    Ok(v["value"].clone())
}

impl WebDriver {
    fn start(profile: &std::path::Path) -> Result<Self> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start chromedriver")?;
        for _ in 0..100 {
            if http_json(port, "GET", "/status", None).is_ok_and(|v| v["ready"] == true) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", format!("--user-data-dir={}", profile.display())]}}}});
        let mut wd = WebDriver {
            port,
            session: String::new(),
            child,
        };
        let v = http_json(port, "POST", "/session", Some(&caps))?;
        wd.session = v["sessionId"].as_str().context("no sessionId")?.to_string();
        Ok(wd)
    }
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        http_json(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
    }
    fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(serde_json::json!({"url": url})))
            .map(|_| ())
    }
    fn find(&self, css: &str) -> Result<String> {
        for _ in 0..100 {
            let found = self
                .call(
                    "POST",
                    "/element",
                    Some(serde_json::json!({"using": "css selector", "value": css})),
                )
                .ok()
                .and_then(|v| {
                    v.as_object()
                        .and_then(|o| o.values().next())
                        .and_then(|x| x.as_str())
                        .map(str::to_string)
                });
            if let Some(id) = found {
                return Ok(id);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!("no element {css} on the page")
    }
    fn attr(&self, css: &str, name: &str) -> Result<String> {
        let id = self.find(css)?;
        Ok(self
            .call("GET", &format!("/element/{id}/attribute/{name}"), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }
    /// Select the field's text (Ctrl+A), type over it and Tab away: one `change`, as a person does it.
    fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css)?;
        self.click(css)?;
        let keys = format!("\u{E009}a\u{E000}{text}\u{E004}");
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(serde_json::json!({ "text": keys })),
        )?;
        Ok(())
    }
    fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css)?;
        self.call(
            "POST",
            &format!("/element/{id}/click"),
            Some(serde_json::json!({})),
        )
        .map(|_| ())
    }
    /// The URL once it contains `needle` (the page rewrites it just after rendering).
    fn url_with(&self, needle: &str) -> Result<String> {
        let mut url = String::new();
        for _ in 0..50 {
            url = self.url()?;
            if url.contains(needle) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(url)
    }
    fn url(&self) -> Result<String> {
        Ok(self
            .call("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }
    fn script(&self, js: &str) -> Result<serde_json::Value> {
        self.call(
            "POST",
            "/execute/async",
            Some(serde_json::json!({"script": js, "args": []})),
        )
    }
    /// Wait until the headline's data-bytes differs from `old`.
    fn bytes_after(&self, old: &str) -> Result<String> {
        for _ in 0..50 {
            let b = self.attr("[data-testid=peak-per-gpu]", "data-bytes")?;
            if b != old {
                return Ok(b);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!("the peak did not change")
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = http_json(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Interactions through WebDriver: inputs change the numbers and the URL, the URL restores the
/// page, the language switch works. Returns the number of checks passed.
fn e2e_interactions(base: &str, profile: &std::path::Path) -> Result<usize> {
    let wd = WebDriver::start(profile)?;
    wd.goto(&format!("{base}?model_name_or_path=Qwen%2FQwen2.5-7B&finetuning_type=lora&quantization_bit=4&gpu=RTX-4090&per_device_train_batch_size=1&cutoff_len=1024"))?;
    let b1 = wd.attr("[data-testid=peak-per-gpu]", "data-bytes")?;
    wd.type_into("[data-testid=per_device_train_batch_size]", "4")?;
    let b4 = wd.bytes_after(&b1)?;
    let url = wd.url_with("per_device_train_batch_size=4")?;
    let batch_ok =
        b4.parse::<u64>()? > b1.parse::<u64>()? && url.contains("per_device_train_batch_size=4");
    println!(
        "e2e: typing batch 4 raises the peak {b1} → {b4} and the URL follows: {batch_ok} ({url})"
    );
    wd.click("[data-testid=method] option[value=full]")?;
    let full = wd.bytes_after(&b4)?;
    let method_ok = wd
        .url_with("finetuning_type=full")?
        .contains("finetuning_type=full")
        && !wd.url()?.contains("quantization_bit");
    println!("e2e: choosing Full gives {full} and the URL says finetuning_type=full: {method_ok}");
    let link = wd.url()?;
    wd.goto(&link)?;
    let restored = wd.attr("[data-testid=peak-per-gpu]", "data-bytes")? == full;
    println!("e2e: opening the share link restores the page: {restored}");
    wd.type_into(
        "[data-testid=model_name_or_path]",
        "meta-llama/Llama-3.1-8B",
    )?;
    let llama = wd.bytes_after(&full)?;
    wd.type_into("[data-testid=model_name_or_path]", "70B")?;
    let big = wd.bytes_after(&llama)?;
    let model_ok = wd
        .url_with("model_name_or_path=70B")?
        .contains("model_name_or_path=70B")
        && big.parse::<u64>()? > llama.parse::<u64>()?;
    println!("e2e: typing a catalog id, then a raw size 70B, changes the model: {model_ok}");
    // Uploading a config.json replaces the model with it.
    let cfg =
        serde_json::to_string(&lorafit_core::catalog::find_model("Qwen/Qwen2.5-0.5B")?.config)?;
    let cfg_path = profile.with_extension("config.json");
    std::fs::write(&cfg_path, &cfg)?;
    let upload = wd.find("[data-testid=config_upload]")?;
    wd.call(
        "POST",
        &format!("/element/{upload}/value"),
        Some(serde_json::json!({ "text": cfg_path.display().to_string() })),
    )?;
    let uploaded = wd.bytes_after(&big)?;
    let url = wd.url()?;
    let (now, _) = lorafit_web::settings_from_query(url.split_once('?').map(|x| x.1).unwrap_or(""));
    let want = lorafit_web::compute_with(&now, Some(&cfg))
        .map_err(anyhow::Error::msg)?
        .peak_reserved_bytes;
    let upload_ok = uploaded == want.to_string();
    println!(
        "e2e: uploading a config.json (Qwen2.5-0.5B) gives {uploaded}, lorafit-core {want}: {upload_ok}"
    );
    let _ = std::fs::remove_file(&cfg_path);
    wd.click("[data-testid=lang]")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let zh =
        wd.script("const done = arguments[arguments.length - 1]; done(document.body.innerText);")?;
    let lang_ok = zh.as_str().is_some_and(|t| t.contains("时长与费用"));
    println!("e2e: the language button switches to 简体中文: {lang_ok}");
    let checks = [batch_ok, method_ok, restored, model_ok, upload_ok, lang_ok];
    if checks.iter().any(|ok| !ok) {
        bail!("interaction checks failed: {checks:?}");
    }
    Ok(checks.len())
}

/// The page's budgets, measured in headless Chromium: gzipped download, recomputation time, first
/// render from a local server. Prints a markdown table (docs/benchmarks.md).
fn bench_web() -> Result<()> {
    setup_browser()?;
    let _ = setup_web();
    let dist = web()?;
    let gz = |f: &str| gzipped_bytes(&dist, f);
    let (wasm_gz, js_gz, html_gz) = (
        gz("lorafit_web_bg.wasm")?,
        gz("lorafit_web.js")?,
        gz("index.html")?,
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || serve_on(listener, dist));
    let profile = std::env::temp_dir().join(format!("lorafit-bench-{}", std::process::id()));
    let base = format!("http://127.0.0.1:{port}/");
    let wd = WebDriver::start(&profile)?;
    let mut first = Vec::new();
    for _ in 0..5 {
        wd.goto(&base)?;
        wd.find("[data-testid=peak-per-gpu]")?;
        let v = wd.script(
            "const done = arguments[arguments.length - 1]; done(window.__lorafitFirstRenderMs);",
        )?;
        first.push(v.as_f64().unwrap_or(f64::NAN));
    }
    let recompute = wd
        .script("const done = arguments[arguments.length - 1]; import('./lorafit_web.js').then(m => done(m.bench_recompute(500)));")?
        .as_f64()
        .unwrap_or(f64::NAN);
    // Input change → the page's DOM updated (the estimate, the method comparison, the largest
    // batch / cutoff searches and the re-render), timed in the page with a MutationObserver.
    let mut update = Vec::new();
    for v in 2..=12 {
        let js = format!(
            "const done = arguments[arguments.length - 1]; const el = document.querySelector('[data-testid=per_device_train_batch_size]'); \
             const peak = document.querySelector('[data-testid=peak-per-gpu]'); const old = peak.getAttribute('data-bytes'); \
             const obs = new MutationObserver(() => {{ const p = document.querySelector('[data-testid=peak-per-gpu]'); \
               if (p.getAttribute('data-bytes') !== old) {{ obs.disconnect(); done(performance.now() - t0); }} }}); \
             obs.observe(document.body, {{subtree: true, attributes: true, childList: true}}); \
             const t0 = performance.now(); el.value = '{v}'; el.dispatchEvent(new Event('change', {{bubbles: true}}));"
        );
        update.push(wd.script(&js)?.as_f64().unwrap_or(f64::NAN));
    }
    update.sort_by(f64::total_cmp);
    // The floor: an input that recomputes nothing (the language button) → DOM updated.
    let mut floor = Vec::new();
    for _ in 0..11 {
        let js = "const done = arguments[arguments.length - 1]; const b = document.querySelector('[data-testid=lang]'); \
                  const old = b.textContent; const obs = new MutationObserver(() => { if (b.textContent !== old) { obs.disconnect(); done(performance.now() - t0); } }); \
                  obs.observe(document.body, {subtree: true, characterData: true, childList: true}); const t0 = performance.now(); b.click();";
        floor.push(wd.script(js)?.as_f64().unwrap_or(f64::NAN));
    }
    floor.sort_by(f64::total_cmp);
    drop(wd);
    let _ = std::fs::remove_dir_all(&profile);
    let lh = lighthouse(&base);
    first.sort_by(f64::total_cmp);
    println!("| budget | measured | limit |\n|---|---|---|");
    println!(
        "| gzipped wasm + js (+ html) | {:.0} KB + {:.0} KB (+ {:.1} KB) = {:.0} KB | 300 KB |",
        wasm_gz as f64 / 1000.0,
        js_gz as f64 / 1000.0,
        html_gz as f64 / 1000.0,
        (wasm_gz + js_gz) as f64 / 1000.0
    );
    println!(
        "| recomputation after an input change: input event → DOM updated (median of 11) | {:.2} ms (max {:.2}) | 2 ms |",
        update[update.len() / 2],
        update[update.len() - 1]
    );
    println!("| … of which one estimate (`bench_recompute`, mean of 500) | {recompute:.3} ms | |");
    println!(
        "| … floor: the language button (re-renders, computes the same) → DOM updated (median of 11) | {:.2} ms | |",
        floor[floor.len() / 2]
    );
    println!(
        "| first render from a local server (median of 5 loads, performance.now() at first render) | {:.0} ms | 1000 ms |",
        first[first.len() / 2]
    );
    match lh {
        Ok(line) => println!("{line}"),
        Err(e) => println!("| Lighthouse | not run: {e} | |"),
    }
    Ok(())
}

/// Lighthouse 12.2.3 (npm, into target/npm, with Debian's chromium) on the served page, mobile
/// preset: the four category scores and the performance metrics, as a table row.
fn lighthouse(url: &str) -> Result<String> {
    let root = root();
    let bin = root.join("target/npm/node_modules/.bin/lighthouse");
    if !bin.exists() {
        std::fs::create_dir_all(root.join("target/npm"))?;
        run(Command::new("npm")
            .current_dir(root.join("target/npm"))
            .args(["install", "--no-audit", "--no-fund", "lighthouse@12.2.3"]))?;
    }
    let report =
        std::env::temp_dir().join(format!("lorafit-lighthouse-{}.json", std::process::id()));
    run(Command::new(&bin)
        .env("CHROME_PATH", "/usr/bin/chromium")
        .arg(url)
        .args([
            "--quiet",
            "--chrome-flags=--headless=new --no-sandbox",
            "--output=json",
            "--form-factor=mobile",
        ])
        .arg(format!("--output-path={}", report.display())))?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let _ = std::fs::remove_file(&report);
    let score = |c: &str| {
        v["categories"][c]["score"]
            .as_f64()
            .map(|s| format!("{:.0}", s * 100.0))
            .unwrap_or_else(|| "?".into())
    };
    let metric = |a: &str| {
        v["audits"][a]["displayValue"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    Ok(format!(
        "| Lighthouse {} (mobile): performance / accessibility / best practices / SEO | {} / {} / {} / {} (LCP {}, TBT {}, CLS {}) | |",
        v["lighthouseVersion"].as_str().unwrap_or("?"),
        score("performance"),
        score("accessibility"),
        score("best-practices"),
        score("seo"),
        metric("largest-contentful-paint"),
        metric("total-blocking-time"),
        metric("cumulative-layout-shift")
    ))
}

/// End-to-end in a real browser: the page built by `web()`, served on loopback, rendered by
/// headless Chromium; its `data-bytes` must equal lorafit-core's estimate for the same keys, a
/// hostile link must show warnings and inject nothing, and the zh default follows the browser.
/// Bytes of a built page file after `gzip -9`.
fn gzipped_bytes(dist: &std::path::Path, file: &str) -> Result<u64> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(dist.join(file))
        .output()?;
    Ok(out.stdout.len() as u64)
}

/// The page's gzipped download (wasm + js + html), in bytes.
fn page_gzipped_bytes(dist: &std::path::Path) -> Result<u64> {
    ["lorafit_web_bg.wasm", "lorafit_web.js", "index.html"]
        .iter()
        .map(|f| gzipped_bytes(dist, f))
        .sum()
}

/// The page's size budget (issue: "page size stays ≤ 300 KB gzipped").
const PAGE_BUDGET_BYTES: u64 = 300_000;

fn e2e() -> Result<()> {
    setup_browser()?;
    let _ = setup_web();
    let dist = web()?;
    let page_bytes = page_gzipped_bytes(&dist)?;
    println!(
        "e2e: the page is {:.1} KB gzipped (budget {} KB)",
        page_bytes as f64 / 1000.0,
        PAGE_BUDGET_BYTES / 1000
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || serve_on(listener, dist));
    let profile = std::env::temp_dir().join(format!("lorafit-e2e-{}", std::process::id()));
    let base = format!("http://127.0.0.1:{port}/");
    let configs = [
        "model_name_or_path=Qwen%2FQwen2.5-7B-Instruct&finetuning_type=lora&quantization_bit=4&gpu=RTX-4090&per_device_train_batch_size=2&cutoff_len=1024",
        "model_name_or_path=meta-llama%2FLlama-3.1-8B&finetuning_type=lora&lora_rank=64&bf16=true&gpu=H100-SXM&per_device_train_batch_size=1&cutoff_len=4096",
        "model_name_or_path=Qwen%2FQwen2.5-1.5B&finetuning_type=full&bf16=true&gpu=A100-80GB&num_gpus=4&deepspeed=ds_z3_config.json&per_device_train_batch_size=4&cutoff_len=2048",
        "model_name_or_path=mistralai%2FMistral-7B-v0.1&finetuning_type=freeze&bf16=true&disable_gradient_checkpointing=true&flash_attn=disabled&per_device_train_batch_size=1&cutoff_len=1024&gpu=L40S",
        // Keys left out take LLaMA-Factory's defaults (gradient_accumulation_steps 1, …), not the page's example.
        "model_name_or_path=meta-llama%2FLlama-3.2-3B&finetuning_type=full&per_device_train_batch_size=1&cutoff_len=4096&disable_gradient_checkpointing=true&flash_attn=sdpa&bf16=true",
        "model_name_or_path=Qwen%2FQwen2.5-7B",
        // Stages and methods.
        "model_name_or_path=Qwen%2FQwen2.5-7B&stage=dpo&finetuning_type=lora&bf16=true&per_device_train_batch_size=1&cutoff_len=2048&gpu=H100-SXM",
        "model_name_or_path=Qwen%2FQwen2.5-1.5B&stage=dpo&finetuning_type=full&bf16=true&per_device_train_batch_size=1&cutoff_len=1024",
        "model_name_or_path=Qwen%2FQwen2.5-1.5B&stage=dpo&pref_loss=simpo&finetuning_type=full&bf16=true",
        "model_name_or_path=Qwen%2FQwen2.5-7B&stage=kto&quantization_bit=4&bf16=true&gpu=RTX-4090&per_device_train_batch_size=1&cutoff_len=1024",
        "model_name_or_path=Qwen%2FQwen2.5-7B&stage=rm&bf16=true&per_device_train_batch_size=2&cutoff_len=1024",
        "model_name_or_path=meta-llama%2FLlama-3.1-8B&finetuning_type=oft&oft_block_size=32&bf16=true&per_device_train_batch_size=1",
        "model_name_or_path=meta-llama%2FLlama-3.1-8B&finetuning_type=full&use_galore=true&galore_rank=128&pure_bf16=true&per_device_train_batch_size=1",
        "model_name_or_path=meta-llama%2FLlama-3.1-8B&finetuning_type=full&use_badam=true&pure_bf16=true&per_device_train_batch_size=1&enable_liger_kernel=true",
        "model_name_or_path=meta-llama%2FLlama-3.1-8B&finetuning_type=full&bf16=true&fsdp=full_shard%20offload&num_gpus=4&per_device_train_batch_size=1",
        // Vision-language and MoE / hybrid models.
        "model_name_or_path=Qwen%2FQwen2.5-VL-7B-Instruct&finetuning_type=full&freeze_vision_tower=false&images_per_sample=2&bf16=true&num_gpus=8&deepspeed=ds_z3_config.json&per_device_train_batch_size=1&cutoff_len=4096",
        "model_name_or_path=Qwen%2FQwen3-VL-8B-Instruct&finetuning_type=lora&quantization_bit=4&images_per_sample=1&bf16=true&gpu=RTX-4090&per_device_train_batch_size=1&cutoff_len=2048",
        "model_name_or_path=Qwen%2FQwen3-VL-8B-Instruct&finetuning_type=lora&videos_per_sample=1&video_seconds=30&video_max_pixels=200704&freeze_vision_tower=false&bf16=true&per_device_train_batch_size=1&cutoff_len=8192",
        "model_name_or_path=OpenGVLab%2FInternVL3_5-8B-HF&finetuning_type=lora&crop_to_patches=true&images_per_sample=2&image_max_pixels=1048576&bf16=true&per_device_train_batch_size=2&cutoff_len=8192",
        "model_name_or_path=OpenGVLab%2FInternVL3-2B-hf&finetuning_type=full&freeze_vision_tower=false&videos_per_sample=1&video_seconds=10&bf16=true&per_device_train_batch_size=1&cutoff_len=8192",
        "model_name_or_path=llava-hf%2Fllava-v1.6-mistral-7b-hf&finetuning_type=lora&quantization_bit=4&images_per_sample=2&bf16=true&gpu=RTX-4090&per_device_train_batch_size=1&cutoff_len=8192",
        "model_name_or_path=zai-org%2FGLM-4.1V-9B-Thinking&finetuning_type=lora&images_per_sample=2&bf16=true&per_device_train_batch_size=1&cutoff_len=4096",
        "model_name_or_path=meta-llama%2FLlama-3.2-11B-Vision-Instruct&finetuning_type=lora&images_per_sample=2&bf16=true&disable_gradient_checkpointing=true&per_device_train_batch_size=1&cutoff_len=2048",
        "model_name_or_path=google%2Fpaligemma2-3b-pt-448&finetuning_type=full&freeze_vision_tower=false&images_per_sample=1&bf16=true&per_device_train_batch_size=2&cutoff_len=2048",
        "model_name_or_path=Qwen%2FQwen1.5-MoE-A2.7B&finetuning_type=lora&bf16=true&per_device_train_batch_size=2&cutoff_len=2048",
        "model_name_or_path=google%2Fgemma-4-26B-A4B-it&finetuning_type=lora&quantization_bit=4&images_per_sample=1&bf16=true&per_device_train_batch_size=1&cutoff_len=4096&gpu=RTX-4090",
        "model_name_or_path=google%2Fgemma-4-E4B-it&finetuning_type=full&images_per_sample=2&bf16=true&per_device_train_batch_size=2&cutoff_len=2048",
        // Audio: Qwen2-Audio (an audio encoder only) and Gemma 4 E2B (audio beside images).
        "model_name_or_path=Qwen%2FQwen2-Audio-7B-Instruct&finetuning_type=lora&audios_per_sample=2&audio_seconds=12&freeze_vision_tower=false&bf16=true&per_device_train_batch_size=2&cutoff_len=2048",
        "model_name_or_path=google%2Fgemma-4-E2B-it&finetuning_type=lora&quantization_bit=4&audios_per_sample=1&audio_seconds=45&images_per_sample=1&bf16=true&per_device_train_batch_size=1&cutoff_len=2048&gpu=RTX-4090",
        "model_name_or_path=Qwen%2FQwen3-Next-80B-A3B-Instruct&finetuning_type=lora&bf16=true&quantization_bit=4&per_device_train_batch_size=1&cutoff_len=4096&gpu=H100-SXM",
        "model_name_or_path=deepseek-ai%2FDeepSeek-V2-Lite&finetuning_type=full&bf16=true&num_gpus=8&deepspeed=ds_z3_config.json&per_device_train_batch_size=1&cutoff_len=2048",
        // Remote-code and older architectures read from their own config names.
        "model_name_or_path=zai-org%2Fglm-4-9b-chat&finetuning_type=lora&bf16=true&per_device_train_batch_size=2&cutoff_len=4096",
        "model_name_or_path=microsoft%2FPhi-3.5-MoE-instruct&finetuning_type=lora&quantization_bit=4&bf16=true&per_device_train_batch_size=1&cutoff_len=2048&gpu=A100-80GB",
        "model_name_or_path=openai-community%2Fgpt2-xl&finetuning_type=lora&lora_target=c_attn%2Cc_proj&bf16=true&per_device_train_batch_size=8&cutoff_len=1024",
    ];
    let mut failures = Vec::new();
    if page_bytes > PAGE_BUDGET_BYTES {
        failures.push("page size over budget");
    }
    for q in configs {
        let dom = chromium_dom(&format!("{base}?{q}"), &profile)?;
        let page: Option<u64> = attr_after(&dom, "data-testid=\"peak-per-gpu\"", "data-bytes")
            .and_then(|b| b.parse().ok());
        let (settings, _) = lorafit_web::settings_from_query(q);
        let want = lorafit_web::compute(&settings)
            .map_err(anyhow::Error::msg)?
            .peak_reserved_bytes;
        // The link's own keys (nothing the page adds) through the real binary:
        // `lorafit estimate CONFIG.yaml --json`.
        let (given, _) = lorafit_core::export::from_query(q);
        let yaml_path = profile.with_extension("yaml");
        std::fs::create_dir_all(&profile)?;
        std::fs::write(
            &yaml_path,
            lorafit_core::export::to_llamafactory_yaml(&given, true),
        )?;
        let out = output(
            Command::new(debug_lorafit()?)
                .current_dir(root())
                .args(["estimate", "--json"])
                .arg(&yaml_path),
        )
        .context("lorafit estimate failed")?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let cli_bytes = v["peak_reserved_bytes"]
            .as_u64()
            .context("peak_reserved_bytes")?;
        println!(
            "e2e: page data-bytes {page:?}, lorafit-core {want}, `lorafit estimate --json` {cli_bytes} for ?{q}"
        );
        // Exports: the YAML always, the DeepSpeed JSON when a ZeRO stage is chosen.
        let exports_ok = dom.contains("data-testid=\"yaml\"")
            && (!q.contains("deepspeed=")
                || (dom.contains("data-testid=\"deepspeed-json\"")
                    && dom.contains("\"stage\": 3")));
        // A vision-language link shows the tower line and its image tokens.
        let vision_ok = !q.contains("-VL-") || dom.contains("data-testid=\"vision\"");
        // A video link: the page's video tokens are the binary's.
        let video_ok = !q.contains("videos_per_sample")
            || attr_after(&dom, "data-testid=\"vision\"", "data-video-tokens")
                == v["vision"]["video_tokens_per_sample"]
                    .as_u64()
                    .map(|t| t.to_string());
        // An audio link: the page's audio tokens are the binary's.
        let audio_ok = !q.contains("audios_per_sample")
            || attr_after(&dom, "data-testid=\"vision\"", "data-audio-tokens")
                == v["vision"]["audio_tokens_per_sample"]
                    .as_u64()
                    .map(|t| t.to_string());
        if page != Some(want)
            || want != cli_bytes
            || !exports_ok
            || !vision_ok
            || !video_ok
            || !audio_ok
        {
            failures.push(q);
        }
    }
    // The catalog search (the model field's datalist) offers every id, grouped by a family select.
    let dom = chromium_dom(&format!("{base}?{}", configs[0]), &profile)?;
    let search_ok = [
        "Qwen/Qwen3-4B-Instruct-2507",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "deepseek-ai/DeepSeek-V3",
    ]
    .iter()
    .all(|id| dom.contains(&format!("value=\"{id}\"")))
        && dom.contains("data-testid=\"family\"");
    println!(
        "e2e: the model search offers Qwen3-4B-Instruct-2507, Qwen2.5-VL-7B and DeepSeek-V3, with a family select: {search_ok}"
    );
    if !search_ok {
        failures.push("catalog search");
    }
    // A hostile link: bad numbers, unknown keys, markup in values.
    let hostile = "model_name_or_path=Qwen%2FQwen2.5-7B&lora_rank=-3&cutoff_len=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&evil=%3Cscript%3Ealert(1)%3C%2Fscript%3E&per_device_train_batch_size=99999999999";
    let dom = chromium_dom(&format!("{base}?{hostile}"), &profile)?;
    let warned = dom.contains("data-testid=\"warnings\"") && dom.matches("<li>").count() >= 4;
    let injected = dom.contains("<img src=\"x\"") || dom.contains("<script>alert");
    let rendered = dom.contains("data-testid=\"peak-per-gpu\"");
    println!(
        "e2e: hostile link: warnings shown {warned}, markup injected {injected}, page rendered {rendered}"
    );
    if !warned || injected || !rendered {
        failures.push("hostile link");
    }
    let interactions = match e2e_interactions(&base, &profile.with_extension("wd")) {
        Ok(n) => n,
        Err(e) => {
            println!("e2e: interactions failed: {e:#}");
            failures.push("interactions");
            0
        }
    };
    // 简体中文 via the link's `lang=zh` (headless Chromium keeps navigator.language at en-US).
    let zh = chromium_dom(
        &format!("{base}?{}&lang=zh", configs[0]),
        &profile.with_extension("zh"),
    )?;
    let en = chromium_dom(&format!("{base}?{}", configs[0]), &profile)?;
    let lang_ok = zh.contains("微调显存")
        && zh.contains("可以放下")
        && en.contains("will your fine-tune fit");
    println!("e2e: lang=zh gives the Chinese page, default English: {lang_ok}");
    if !lang_ok {
        failures.push("language");
    }
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_dir_all(profile.with_extension("zh"));
    let _ = std::fs::remove_dir_all(profile.with_extension("wd"));
    if !failures.is_empty() {
        bail!("browser end-to-end failed for: {failures:?}");
    }
    println!("e2e: {} passed, 0 failed", configs.len() + 3 + interactions);
    Ok(())
}

/// The debug `lorafit` binary. `cargo test --workspace` has just built it (with the workspace's
/// unified features); `cargo run -p lorafit-cli` would resolve features differently and rebuild
/// burn and wgpu from scratch, so it is only built here when missing or stale.
fn debug_lorafit() -> Result<std::path::PathBuf> {
    let bin = root().join("target/debug/lorafit");
    // Also rebuilt when older than a source or data file of the crates: a stale binary (say,
    // from before a catalog change) would disagree with the page it is compared with.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none_or(|t| newest_mtime(&root().join("crates")) > Some(t)) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo)
            .current_dir(root())
            .args(["build", "-p", "lorafit-cli"]))?;
    }
    Ok(bin)
}

/// The latest modification time of the files under `dir` (`target` folders skipped).
fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A release `lorafit` for the bundled example and the training benchmark.
fn release_lorafit() -> Result<std::path::PathBuf> {
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "lorafit-cli"])
        .current_dir(root()))?;
    Ok(root().join("target/release/lorafit"))
}

/// `cargo xtask example`: the bundled tiny LoRA run (random-weight model, alpaca data).
fn example() -> Result<()> {
    let lorafit = release_lorafit()?;
    let model = root().join("target/tiny-model");
    run(Command::new(&lorafit)
        .args(["random-model", "examples/tiny/model"])
        .arg(&model)
        .current_dir(root()))?;
    run(Command::new(&lorafit)
        .args(["train", "examples/tiny/train.yaml"])
        .current_dir(root()))?;
    println!("adapter, trainer_log.jsonl and training_loss.png are in target/tiny-lora/");
    Ok(())
}

/// `cargo xtask bench-quant` / `bench-attention`: one of crates/lorafit-train/examples/ in
/// release, which prints its markdown table of docs/benchmarks.md — the 4-bit kernels'
/// throughput (bench_quant.rs), or attention's forward and backward, the `#[cube]` kernels
/// against the tiled tensor ops on the same device (bench_attention.rs).
/// `BENCH_BACKEND=vulkan` builds with `--features vulkan` (SPIR-V) into target/vulkan and runs on
/// Debian sid's lavapipe, as `test-vulkan` does (xtask/src/vulkan.rs).
fn bench_example(example: &str) -> Result<()> {
    if std::env::var("BENCH_BACKEND").as_deref() == Ok("vulkan") {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        return vulkan::example(&cargo, example);
    }
    run(Command::new("cargo")
        .args([
            "run",
            "--release",
            "-p",
            "lorafit-train",
            "--example",
            example,
        ])
        .current_dir(root()))
}

/// `cargo xtask bench-train`: training tokens/s on the CPU for a 15.7M-parameter llama, lorafit
/// (release, backend from BENCH_BACKEND, default ndarray) and, when `python3` (or
/// LORAFIT_PYTHON) has torch + transformers + peft, the same run in PyTorch + PEFT.
fn bench_train() -> Result<()> {
    let lorafit = release_lorafit()?;
    let dir = root().join("target/bench-train");
    std::fs::create_dir_all(dir.join("src"))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 8192,
        "hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6,
        "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 64,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_theta": 10000.0, "tie_word_embeddings": false, "initializer_range": 0.02
    });
    std::fs::write(
        dir.join("src/config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    run(Command::new(&lorafit)
        .arg("random-model")
        .arg(dir.join("src/config.json"))
        .arg(dir.join("model")))?;
    let (rows, len, vocab) = (64usize, 256usize, 8192u64);
    let mut state = 42u64;
    let mut data = String::new();
    for _ in 0..rows {
        let ids: Vec<String> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % vocab).to_string()
            })
            .collect();
        data.push_str(&format!("{{\"input_ids\": [{}]}}\n", ids.join(",")));
    }
    std::fs::write(dir.join("data.jsonl"), data)?;
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "ndarray".into());
    // BENCH_PRECISION=bf16 / fp16: the linears stored 16-bit (widened to f32 for each product).
    let precision = std::env::var("BENCH_PRECISION").unwrap_or_else(|_| "f32".into());
    let precision_key = match precision.as_str() {
        "f32" => "",
        "bf16" => "bf16: true\n",
        "fp16" => "fp16: true\n",
        other => bail!("BENCH_PRECISION={other}: use f32, bf16 or fp16"),
    };
    let steps = 12;
    let yaml = format!(
        "model_name_or_path: {model}\nfinetuning_type: lora\nlora_rank: 8\nlora_alpha: 16\nlora_target: all\n\
         dataset: {data}\ncutoff_len: {len}\nper_device_train_batch_size: 4\ngradient_accumulation_steps: 1\n\
         learning_rate: 1.0e-4\nlr_scheduler_type: constant\nmax_steps: {steps}\nmax_grad_norm: 1.0\n\
         shuffle: false\nlogging_steps: 1\nsave_steps: 100000\noutput_dir: {out}\nbackend: {backend}\n\
         disable_gradient_checkpointing: true\n{precision_key}",
        model = dir.join("model").display(),
        data = dir.join("data.jsonl").display(),
        out = dir.join("out").display(),
    );
    std::fs::write(dir.join("train.yaml"), yaml)?;
    run(Command::new(&lorafit)
        .arg("train")
        .arg(dir.join("train.yaml")))?;
    let log = std::fs::read_to_string(dir.join("out/trainer_log.jsonl"))?;
    let last: serde_json::Value = serde_json::from_str(log.lines().last().context("empty log")?)?;
    let ours = last["tokens_per_second"]
        .as_f64()
        .context("tokens_per_second")?;
    println!(
        "lorafit ({backend}): {ours:.0} tokens/s over {steps} steps (batch 4 × {len} tokens, LoRA r=8 on all linears, {})",
        if precision_key.is_empty() {
            "f32".to_string()
        } else {
            format!("linears stored {precision}, f32 arithmetic")
        }
    );
    let python = std::env::var("LORAFIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = precision_key.is_empty()
        && Command::new(&python)
            .args(["-c", "import torch, transformers, peft"])
            .status()
            .is_ok_and(|s| s.success());
    if has_torch {
        run(Command::new(&python)
            .arg(root().join("scripts/bench_train_torch.py"))
            .arg(dir.join("model"))
            .arg(dir.join("data.jsonl"))
            .arg(steps.to_string()))?;
    } else {
        println!(
            "PyTorch + PEFT side skipped: `{python}` lacks torch, transformers or peft (set LORAFIT_PYTHON)"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("setup") => setup(),
        Some("validation") => validation_markdown().map(|md| print!("{md}")),
        Some("setup-web") => setup_web(),
        Some("web") => web().map(|_| ()),
        Some("e2e") => e2e(),
        Some("bench-web") => bench_web(),
        Some("bench-train") => bench_train(),
        Some("bench-quant") => bench_example("bench_quant"),
        Some("bench-attention") => bench_example("bench_attention"),
        Some("example") => example(),
        Some("fuzz-smoke") => fuzz::smoke(),
        Some("test-vulkan") => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            vulkan::tests(&cargo)
        }
        Some("fuzz") => fuzz::fuzz(
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600),
            args.get(2).map(String::as_str),
        ),
        Some("serve") => {
            let _ = setup_web();
            let dist = web()?;
            let port = std::env::var("PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(8080);
            serve_dir(dist, port)
        }
        _ => {
            eprintln!("usage: cargo xtask <test|setup|validation|web|serve|setup-web>");
            eprintln!("  web         build the static page into dist/");
            eprintln!(
                "  serve       build it and serve it on http://127.0.0.1:8080/ (PORT= to change)"
            );
            eprintln!("  test        install what is missing (wasm32 target) and run every test");
            eprintln!("  validation  print docs/validation.md from the measured points");
            eprintln!(
                "  test-vulkan lorafit-train's tests built with --features vulkan (SPIR-V) on Debian sid's lavapipe"
            );
            eprintln!("  example     train the bundled tiny LoRA example (offline, ~15 s)");
            eprintln!(
                "  fuzz [SECS] [TARGET]  run each (or one) cargo-fuzz target for SECS (default 600)"
            );
            eprintln!(
                "  bench-train training tokens/s, lorafit vs PyTorch + PEFT (BENCH_BACKEND, BENCH_PRECISION)"
            );
            eprintln!(
                "  bench-quant 4-bit dequant / fused dequant-matmul throughput (BENCH_BACKEND, BENCH_SHAPE, BENCH_M)"
            );
            eprintln!(
                "  bench-attention attention forward / backward, #[cube] kernels vs tensor ops (BENCH_BACKEND, BENCH_SEQ, BENCH_HEADS, BENCH_HD)"
            );
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {

    /// docs/validation.md is what `cargo xtask validation` prints: nobody edits it by hand.
    #[test]
    fn validation_md_is_generated() {
        let want = super::validation_markdown().expect("generates");
        let have = include_str!("../../docs/validation.md");
        assert!(
            have == want,
            "docs/validation.md differs from `cargo xtask validation > docs/validation.md`; edit docs/validation-notes.md or the data, then regenerate"
        );
    }
}
