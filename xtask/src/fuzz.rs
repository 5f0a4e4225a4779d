//! `cargo xtask fuzz [SECONDS]`: the cargo-fuzz targets in fuzz/ (share-link decoder, YAML/JSON
//! config reader, config.json reader), each run for SECONDS (default 600) on a scratch copy of the
//! seeds in fuzz/corpus/, printing executions and crashes as a markdown table (docs/fuzzing.md).
//! `cargo xtask test` runs a short, reproducible smoke run of each ([`smoke`]).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{output, root, run};

pub const TARGETS: [&str; 4] = ["share_link", "config_yaml", "config_json", "media_headers"];

/// cargo-fuzz is installed when missing (it builds on stable with RUSTC_BOOTSTRAP, coverage
/// instrumentation only: `--sanitizer none`).
fn setup() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_none() {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// How long a run lasts: a time, or (for CI's smoke run) a fixed number of inputs from a fixed
/// seed, so the smoke run is the same every time.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Seconds(u64),
    Runs(u64),
}

/// One target: (executions, crash files written).
fn run_target(target: &str, budget: Budget) -> Result<(u64, usize)> {
    let dir = root().join("fuzz");
    let scratch =
        std::env::temp_dir().join(format!("lorafit-fuzz-{target}-{}", std::process::id()));
    let artifacts = scratch.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::create_dir_all(scratch.join("corpus"))?;
    let out = Command::new("cargo")
        .current_dir(&dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "-O", "--sanitizer", "none", target])
        .arg(scratch.join("corpus"))
        .arg(dir.join("corpus").join(target))
        .arg("--")
        .args(match budget {
            Budget::Seconds(t) => vec![format!("-max_total_time={t}")],
            Budget::Runs(n) => vec![format!("-runs={n}"), "-seed=1".into()],
        })
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let runs = log
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("Done ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let crashes = std::fs::read_dir(&artifacts)?.count();
    if !out.status.success() || crashes > 0 {
        eprintln!("{log}");
        bail!(
            "fuzz target {target} failed: {crashes} crash file(s) in {}",
            artifacts.display()
        );
    }
    let _ = std::fs::remove_dir_all(scratch.join("corpus"));
    Ok((runs, crashes))
}

/// Run every target (or only `only`) for `seconds` and print the table.
pub fn fuzz(seconds: u64, only: Option<&str>) -> Result<()> {
    setup()?;
    let mut rows = Vec::new();
    for t in TARGETS.into_iter().filter(|t| only.is_none_or(|o| o == *t)) {
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let (runs, crashes) = run_target(t, Budget::Seconds(seconds))?;
        let row = format!("| `{t}` | {seconds} s | {runs} | {crashes} |");
        eprintln!("xtask: {row}");
        rows.push(row);
    }
    println!("| target | time | executions | crashes |\n|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// CI's smoke run: 100,000 inputs of each target from seed 1.
pub fn smoke() -> Result<()> {
    setup()?;
    for t in TARGETS {
        let (runs, crashes) = run_target(t, Budget::Runs(100_000))?;
        eprintln!("xtask: fuzz smoke {t}: {runs} inputs, {crashes} crashes");
    }
    Ok(())
}
