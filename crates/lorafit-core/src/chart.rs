//! The peak-memory picture: per-GPU peak against cutoff_len and against batch size for one
//! configuration, the breakdown stacked, the chosen GPU's memory as a line. Plain SVG text, so
//! `lorafit estimate --plot` and the web page draw the same thing.

use std::fmt::Write;

use crate::arch::ModelArch;
use crate::catalog;
use crate::error::Error;
use crate::memory::{self, Breakdown};
use crate::plan::Plan;

/// Fill colours of the breakdown parts, in [`Breakdown::NAMES`] order (colour-blind-safe).
pub const PART_COLOURS: [&str; 7] = [
    "#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377", "#bbbbbb",
];

/// One sampled point of a sweep: the x value and the breakdown there.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub x: u64,
    pub breakdown: Breakdown,
}

/// The peak at each `cutoff_len` of a sweep up to twice the configured one (at least 4096).
pub fn sweep_cutoff(arch: &ModelArch, plan: &Plan) -> Vec<Sample> {
    let top = (plan.cutoff_len * 2).max(4096);
    let xs: Vec<u64> = (1..=16).map(|i| (top * i / 16).max(1)).collect();
    sweep(xs, |x| {
        let mut p = plan.clone();
        p.cutoff_len = x;
        memory::estimate(arch, &p).ok().map(|m| m.breakdown)
    })
}

/// The peak at each `per_device_train_batch_size` from 1 to twice the configured one (at least 16).
pub fn sweep_batch(arch: &ModelArch, plan: &Plan) -> Vec<Sample> {
    let top = (plan.batch_size * 2).clamp(16, 4096);
    let step = (top / 16).max(1);
    let xs: Vec<u64> = std::iter::once(1)
        .chain((1..=16).map(|i| i * step))
        .filter(|x| *x <= top)
        .collect();
    sweep(xs, |x| {
        let mut p = plan.clone();
        p.batch_size = x;
        memory::estimate(arch, &p).ok().map(|m| m.breakdown)
    })
}

fn sweep(mut xs: Vec<u64>, f: impl Fn(u64) -> Option<Breakdown>) -> Vec<Sample> {
    xs.dedup();
    xs.into_iter()
        .filter_map(|x| f(x).map(|breakdown| Sample { x, breakdown }))
        .collect()
}

const GIB: f64 = (1u64 << 30) as f64;

/// One panel: stacked areas of the breakdown over the sweep, the GPU line, the current x marked.
fn panel(
    out: &mut String,
    samples: &[Sample],
    (left, top, w, h): (f64, f64, f64, f64),
    x_label: &str,
    current_x: u64,
    gpu: Option<(&str, u64)>,
) {
    let Some(last) = samples.last() else {
        return;
    };
    let x_max = last.x.max(1) as f64;
    let y_top = samples
        .iter()
        .map(|s| s.breakdown.total())
        .chain(gpu.map(|(_, b)| b))
        .max()
        .unwrap_or(1) as f64
        * 1.08;
    let px = |x: u64| left + w * x as f64 / x_max;
    let py = |bytes: f64| top + h - h * bytes / y_top;
    // Stacked areas, bottom part first.
    for (i, colour) in PART_COLOURS.iter().enumerate() {
        let below =
            |s: &Sample| -> f64 { s.breakdown.parts()[..i].iter().map(|p| p.1 as f64).sum() };
        let mut d = String::new();
        for (j, s) in samples.iter().enumerate() {
            let y = below(s) + s.breakdown.parts()[i].1 as f64;
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                px(s.x),
                py(y)
            );
        }
        for s in samples.iter().rev() {
            let _ = write!(d, "L{:.1},{:.1} ", px(s.x), py(below(s)));
        }
        let _ = write!(
            out,
            r#"<path d="{d}Z" fill="{colour}" stroke="none"><title>{}</title></path>"#,
            crate::memory::Breakdown::NAMES[i]
        );
    }
    // Axes and ticks.
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#333"/>"##,
        b = top + h,
        r = left + w
    );
    for k in 0..=4 {
        let bytes = y_top * k as f64 / 4.0;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#333">{:.0}</text>"##,
            left - 4.0,
            py(bytes) + 3.0,
            bytes / GIB
        );
    }
    for s in samples.iter().step_by((samples.len() / 4).max(1)) {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#333">{}</text>"##,
            px(s.x),
            top + h + 13.0,
            s.x
        );
    }
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#111">{x_label}</text>"##,
        left + w / 2.0,
        top + h + 28.0
    );
    if let Some((name, bytes)) = gpu {
        let y = py(bytes as f64);
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#111" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#111">{name} {:.0} GiB</text>"##,
            left + w,
            left + w - 2.0,
            y - 3.0,
            bytes as f64 / GIB
        );
    }
    let cx = px(current_x.min(last.x));
    let _ = write!(
        out,
        r##"<line x1="{cx:.1}" y1="{top}" x2="{cx:.1}" y2="{:.1}" stroke="#111" stroke-width="1.5"/>"##,
        top + h
    );
}

/// The two-panel chart for `plan` on `arch`, as a standalone SVG document.
pub fn peak_chart_svg(arch: &ModelArch, plan: &Plan) -> Result<String, Error> {
    // Fails with the same error the estimate would (bad lora_target, …).
    memory::estimate(arch, plan)?;
    let gpu = match plan.gpu.as_deref() {
        Some(id) => {
            let g = catalog::find_gpu(id)?;
            Some((g.id.clone(), g.memory_bytes()))
        }
        None => None,
    };
    let gpu_ref = gpu.as_ref().map(|(n, b)| (n.as_str(), *b));
    let (w, h) = (760.0, 300.0);
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="peak GPU memory against cutoff_len and batch size" font-family="sans-serif"><rect width="{w}" height="{h}" fill="#fff"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="10" y="16" font-size="12" fill="#111">per-GPU peak (GiB, nvidia-smi) — {}</text>"##,
        escape(&plan.describe())
    );
    panel(
        &mut out,
        &sweep_cutoff(arch, plan),
        (45.0, 30.0, 310.0, 210.0),
        &format!("cutoff_len (batch {})", plan.batch_size),
        plan.cutoff_len,
        gpu_ref,
    );
    panel(
        &mut out,
        &sweep_batch(arch, plan),
        (425.0, 30.0, 310.0, 210.0),
        &format!(
            "per_device_train_batch_size (cutoff_len {})",
            plan.cutoff_len
        ),
        plan.batch_size,
        gpu_ref,
    );
    for (i, name) in Breakdown::NAMES.iter().enumerate() {
        let x = 45.0 + i as f64 * 100.0;
        let _ = write!(
            out,
            r##"<rect x="{x}" y="282" width="10" height="10" fill="{}"/><text x="{:.0}" y="291" font-size="10" fill="#111">{name}</text>"##,
            PART_COLOURS[i],
            x + 14.0
        );
    }
    out.push_str("</svg>");
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
