//! The SPIR-V runtime's tests: lorafit-train built with `--features vulkan`, where cubecl compiles
//! every kernel to SPIR-V for a Vulkan adapter (shaders/'s WGSL cannot launch there, so the
//! `#[cube]` kernels and burn's matmul serve the frozen weights), run on a newer lavapipe than
//! Debian 12's.
//!
//! Debian 12's Mesa 22.3 lavapipe, and bookworm-backports' Mesa 25.0, crash (SIGSEGV in
//! `vkCreateComputePipelines`) on the float atomic add that cubek's reduction kernels emit, so
//! these tests run on Debian sid's lavapipe (Mesa 26, f16 arithmetic and
//! VK_KHR_cooperative_matrix). Its packages need sid's glibc: they are downloaded with apt into
//! `target/mesa-sid/` (nothing is installed on the system) and each test binary runs through that
//! folder's own `ld-linux` with `--library-path`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, run};

/// Where sid's packages are fetched and unpacked.
fn mesa_dir() -> PathBuf {
    root().join("target/mesa-sid")
}

/// sid's lavapipe and everything it links, unpacked under `target/mesa-sid/root` (fetched once);
/// returns the ICD file pointing at its `libvulkan_lvp.so`.
fn sid_lavapipe() -> Result<PathBuf> {
    let dir = mesa_dir();
    let unpacked = dir.join("root");
    let icd = dir.join("lvp_icd.json");
    if icd.exists() && unpacked.join("usr/lib64/ld-linux-x86-64.so.2").exists() {
        return Ok(icd);
    }
    let archives = dir.join("cache/archives/partial");
    std::fs::create_dir_all(&archives)?;
    std::fs::create_dir_all(dir.join("lists/partial"))?;
    std::fs::write(
        dir.join("sources.list"),
        "deb http://deb.debian.org/debian sid main\n",
    )?;
    // An empty package database: apt resolves (and downloads) the whole dependency closure.
    std::fs::write(dir.join("status"), "")?;
    let opt = |k: &str, v: &Path| format!("-o{k}={}", v.display());
    let apt = |args: &[&str]| -> Result<()> {
        run(Command::new("apt-get")
            .arg(opt("Dir::Etc::SourceList", &dir.join("sources.list")))
            .arg("-oDir::Etc::SourceParts=/dev/null")
            .arg(opt("Dir::State::Lists", &dir.join("lists")))
            .arg(opt("Dir::Cache", &dir.join("cache")))
            .arg(opt("Dir::State::status", &dir.join("status")))
            .arg("-oAPT::Install-Recommends=false")
            .arg("-oDebug::NoLocking=1")
            .args(args))
    };
    apt(&["update", "-qq"])?;
    apt(&[
        "install",
        "-y",
        "-qq",
        "--download-only",
        "mesa-vulkan-drivers",
    ])?;
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked)?;
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir.join("cache/archives"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    eprintln!(
        "xtask: unpacking {} packages into {}",
        debs.len(),
        unpacked.display()
    );
    for deb in &debs {
        let status = Command::new("dpkg")
            .arg("-x")
            .arg(deb)
            .arg(&unpacked)
            .status()
            .context("dpkg -x")?;
        if !status.success() {
            bail!("dpkg -x {} failed with {status}", deb.display());
        }
    }
    let lib = unpacked.join("usr/lib/x86_64-linux-gnu/libvulkan_lvp.so");
    if !lib.exists() {
        bail!("sid's mesa-vulkan-drivers has no {}", lib.display());
    }
    // The package's ICD names the library by file name; point it at the unpacked one.
    let text = std::fs::read_to_string(unpacked.join("usr/share/vulkan/icd.d/lvp_icd.json"))
        .context("sid's lavapipe ICD file")?;
    let text = text.replace("\"libvulkan_lvp.so\"", &format!("\"{}\"", lib.display()));
    std::fs::write(&icd, text)?;
    Ok(icd)
}

/// The Mesa version unpacked (from the package file's name).
fn mesa_version() -> String {
    std::fs::read_dir(mesa_dir().join("cache/archives"))
        .ok()
        .and_then(|d| {
            d.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("mesa-vulkan-drivers_")
                    .map(|v| v.split('_').next().unwrap_or(v).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The executables a `cargo … --message-format=json` build produced, `test` ones or not.
fn executables(stdout: &[u8], test: bool) -> Vec<PathBuf> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["profile"]["test"] == test)
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect()
}

/// `exe` on sid's lavapipe: through sid's `ld-linux` with its libraries, the ICD pointed at its
/// `libvulkan_lvp.so`.
fn on_sid(exe: &Path, icd: &Path) -> Command {
    let sysroot = mesa_dir().join("root");
    let mut cmd = Command::new(sysroot.join("usr/lib64/ld-linux-x86-64.so.2"));
    cmd.arg("--library-path")
        .arg(sysroot.join("usr/lib/x86_64-linux-gnu"))
        .arg(exe)
        .env("VK_ICD_FILENAMES", icd);
    cmd
}

/// One of lorafit-train's examples (a benchmark) built in release with `--features vulkan` and run
/// on sid's lavapipe; the `BENCH_*` variables pass through.
pub fn example(cargo: &str, name: &str) -> Result<()> {
    let icd = sid_lavapipe()?;
    eprintln!(
        "xtask: {name} on the SPIR-V runtime, Debian sid's lavapipe (Mesa {})",
        mesa_version()
    );
    let built = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--release",
            "-p",
            "lorafit-train",
            "--example",
            name,
            "--features",
            "vulkan",
            "--message-format=json",
        ])
        .env("CARGO_TARGET_DIR", root().join("target/vulkan"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo build --example --features vulkan")?;
    if !built.status.success() {
        bail!("building the {name} example with --features vulkan failed");
    }
    let Some(exe) = executables(&built.stdout, false).pop() else {
        bail!("no executable came out of the {name} build");
    };
    run(on_sid(&exe, &icd).current_dir(root()))
}

/// Build lorafit-train's tests with `--features vulkan` (its own target directory, so the default
/// build is not invalidated) and run every test binary on sid's lavapipe.
pub fn tests(cargo: &str) -> Result<()> {
    let icd = sid_lavapipe()?;
    eprintln!(
        "xtask: SPIR-V tests on Debian sid's lavapipe (Mesa {})",
        mesa_version()
    );
    let target = root().join("target/vulkan");
    let built = Command::new(cargo)
        .current_dir(root())
        .args([
            "test",
            "-p",
            "lorafit-train",
            "--features",
            "vulkan",
            "--no-run",
            "--message-format=json",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run --features vulkan")?;
    if !built.status.success() {
        bail!("building lorafit-train's tests with --features vulkan failed");
    }
    let executables = executables(&built.stdout, true);
    if executables.is_empty() {
        bail!("no test binaries came out of the --features vulkan build");
    }
    for exe in executables {
        run(on_sid(&exe, &icd)
            .current_dir(root().join("crates/lorafit-train"))
            .env("LORAFIT_EXPECT_COOPERATIVE_MATRIX", "1"))?;
    }
    Ok(())
}
