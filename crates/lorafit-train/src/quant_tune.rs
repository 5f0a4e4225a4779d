//! Which path computes a 4-bit product where shaders/'s WGSL kernels run (the wgpu runtime
//! compiling to WGSL): the fused dequant-matmul (`q4_matmul.wgsl` / `q4_gemv.wgsl`), which never
//! holds the dense weight, or dequantization into a temporary f32 weight followed by burn's own
//! matmul (cubecl's tuned kernels), which holds one layer's dense weight for the length of the
//! product — the allocator hands the same pages to the next one, so the 4-bit peak grows by one
//! weight, not by the model.
//!
//! `quant_kernel: auto` (the default) times both paths on the first product of each shape — rows
//! rounded up to a power of two, the weight's `[out, in]`, the orientation — and keeps the faster
//! for the rest of the run; `fused` / `dequantize` fix the path. The two paths sum in different
//! orders, so their results differ in the last bits: a run's choices are saved in each
//! checkpoint's `trainer_state.json` (`quant_kernels`) and a resumed run takes them instead of
//! measuring again, which keeps resume bit-identical.
//!
//! One tuner per loaded [`Model`](crate::Model) (its weights carry the [`TunerId`] in their
//! [`Q4Meta`](crate::quant_ops::Q4Meta)); a weight without one takes the fused path.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One of the two ways to compute a 4-bit product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Q4Path {
    /// shaders/'s fused dequant-matmul.
    Fused,
    /// Dequantize into a temporary, then burn's matmul.
    Dequantize,
}

/// The `quant_kernel` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Q4Kernel {
    /// Time both paths on each shape's first product and keep the faster.
    #[default]
    Auto,
    /// Always this path.
    Fixed(Q4Path),
}

impl Q4Kernel {
    /// The key's value as written in a config (`auto`, `fused`, `dequantize`).
    pub fn parse(value: &str) -> Option<Q4Kernel> {
        match value {
            "auto" => Some(Q4Kernel::Auto),
            "fused" => Some(Q4Kernel::Fixed(Q4Path::Fused)),
            "dequantize" => Some(Q4Kernel::Fixed(Q4Path::Dequantize)),
            _ => None,
        }
    }
}

/// A product's shape as the tuner tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShapeKey {
    /// Rows of the activation, rounded up to a power of two.
    pub rows: usize,
    pub out: usize,
    pub inp: usize,
    /// `x·Wᵀ` (forward) rather than `g·W` (input gradient).
    pub transposed: bool,
}

impl ShapeKey {
    pub fn new(rows: usize, out: usize, inp: usize, transposed: bool) -> ShapeKey {
        ShapeKey {
            rows: rows.max(1).next_power_of_two(),
            out,
            inp,
            transposed,
        }
    }
}

/// The path taken for one shape, and what the measurement saw (absent for a fixed path or a
/// choice restored from a checkpoint that did not record it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(flatten)]
    pub shape: ShapeKey,
    pub path: Q4Path,
    /// Microseconds of one fused product (whole numbers, so that a checkpoint restores them
    /// exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dequantize_us: Option<u64>,
}

/// A model's tuner, by index into the process's table (so that [`Q4Meta`](crate::quant_ops::Q4Meta)
/// stays `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunerId(usize);

struct Tuner {
    mode: Q4Kernel,
    choices: BTreeMap<ShapeKey, Choice>,
}

static TUNERS: Mutex<Vec<Tuner>> = Mutex::new(Vec::new());

fn tuners() -> std::sync::MutexGuard<'static, Vec<Tuner>> {
    TUNERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TunerId {
    /// A tuner for one run, starting from `restored` choices (a resumed run's).
    pub fn new(mode: Q4Kernel, restored: &[Choice]) -> TunerId {
        let mut all = tuners();
        all.push(Tuner {
            mode,
            choices: restored.iter().map(|c| (c.shape, c.clone())).collect(),
        });
        TunerId(all.len() - 1)
    }

    /// Set how the rest of the run picks (the trainer's `quant_kernel`); choices already made stay.
    pub fn set_mode(self, mode: Q4Kernel) {
        if let Some(t) = tuners().get_mut(self.0) {
            t.mode = mode;
        }
    }

    /// Take a resumed run's saved choices (they replace any made for the same shapes).
    pub fn restore(self, choices: &[Choice]) {
        if let Some(t) = tuners().get_mut(self.0) {
            for c in choices {
                t.choices.insert(c.shape, c.clone());
            }
        }
    }

    /// The choices made so far, by shape.
    pub fn choices(self) -> Vec<Choice> {
        tuners()
            .get(self.0)
            .map(|t| t.choices.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The path for a product of `key`'s shape: the fixed one, the one already chosen for the shape,
/// or — measuring with `time` (seconds of one product on the device, synchronised) — the faster.
pub fn path(tuner: Option<TunerId>, key: ShapeKey, mut time: impl FnMut(Q4Path) -> f64) -> Q4Path {
    let Some(id) = tuner else {
        return Q4Path::Fused;
    };
    let mode = {
        let all = tuners();
        let Some(t) = all.get(id.0) else {
            return Q4Path::Fused;
        };
        if let Some(c) = t.choices.get(&key) {
            return c.path;
        }
        t.mode
    };
    // Measure without the lock held: the products run on the device.
    let choice = match mode {
        Q4Kernel::Fixed(path) => Choice {
            shape: key,
            path,
            fused_us: None,
            dequantize_us: None,
        },
        Q4Kernel::Auto => {
            let us = |secs: f64| (secs * 1e6).round() as u64;
            let (fused, dequantize) = (us(time(Q4Path::Fused)), us(time(Q4Path::Dequantize)));
            Choice {
                shape: key,
                path: if dequantize < fused {
                    Q4Path::Dequantize
                } else {
                    Q4Path::Fused
                },
                fused_us: Some(fused),
                dequantize_us: Some(dequantize),
            }
        }
    };
    let path = choice.path;
    if let Some(t) = tuners().get_mut(id.0) {
        t.choices.entry(key).or_insert(choice);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_faster_path_per_shape_and_restores_choices() {
        let id = TunerId::new(Q4Kernel::Auto, &[]);
        let k = ShapeKey::new(300, 64, 32, true);
        assert_eq!(k.rows, 512);
        let mut calls = 0;
        let slow_fused = |p: Q4Path| {
            calls += 1;
            if p == Q4Path::Fused { 2.0 } else { 1.0 }
        };
        assert_eq!(path(Some(id), k, slow_fused), Q4Path::Dequantize);
        assert_eq!(calls, 2);
        // Measured once: the next product of the shape (rows 257..512) takes the choice.
        let never = |_: Q4Path| -> f64 { panic!("measured twice") };
        assert_eq!(
            path(Some(id), ShapeKey::new(257, 64, 32, true), never),
            Q4Path::Dequantize
        );
        let other = ShapeKey::new(1, 64, 32, false);
        assert_eq!(
            path(Some(id), other, |p| if p == Q4Path::Fused {
                1.0
            } else {
                3.0
            }),
            Q4Path::Fused
        );
        let saved = id.choices();
        assert_eq!(saved.len(), 2);
        // A resumed run takes the saved choices without measuring, through JSON.
        let json = serde_json::to_string(&saved).expect("json");
        let back: Vec<Choice> = serde_json::from_str(&json).expect("parse");
        let resumed = TunerId::new(Q4Kernel::Auto, &back);
        assert_eq!(path(Some(resumed), k, never), Q4Path::Dequantize);
        assert_eq!(path(Some(resumed), other, never), Q4Path::Fused);
        // Fixed modes and weights without a tuner never measure.
        let fixed = TunerId::new(Q4Kernel::Fixed(Q4Path::Dequantize), &[]);
        assert_eq!(path(Some(fixed), k, never), Q4Path::Dequantize);
        assert_eq!(path(None, k, never), Q4Path::Fused);
        assert_eq!(
            Q4Kernel::parse("fused"),
            Some(Q4Kernel::Fixed(Q4Path::Fused))
        );
        assert_eq!(Q4Kernel::parse("fast"), None);
    }
}
