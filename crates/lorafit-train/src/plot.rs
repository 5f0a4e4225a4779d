//! `training_loss.png`: the loss per logging step and its smoothed curve (as LLaMA-Factory's
//! `plot_loss` draws), rasterised here with a small built-in bitmap font so no system fonts are needed.

use std::path::Path;

use crate::error::{Error, Result};

const W: usize = 800;
const H: usize = 500;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 40;
const BOTTOM: usize = 50;

/// 5×7 glyphs, one row per byte (low 5 bits, MSB on the left).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [30, 1, 1, 14, 1, 1, 30],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 14, 0, 0, 0],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'd' => [1, 1, 13, 19, 17, 17, 15],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'g' => [0, 15, 17, 17, 15, 1, 14],
        'h' => [16, 16, 22, 25, 17, 17, 17],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'm' => [0, 0, 26, 21, 21, 17, 17],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 15, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'w' => [0, 0, 17, 17, 21, 21, 10],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        _ => [0; 7],
    }
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&rgb);
        }
    }
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3], thick: i64) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(x.round() as i64 + dx, y.round() as i64 + dy, rgb);
                }
            }
        }
    }
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64) {
        for (k, c) in s.chars().enumerate() {
            let g = glyph(c);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (16 >> col) != 0 {
                        for sx in 0..scale {
                            for sy in 0..scale {
                                self.set(
                                    x + (k as i64 * 6 + col) * scale + sx,
                                    y + row as i64 * scale + sy,
                                    [0, 0, 0],
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Exponential moving average as LLaMA-Factory's `smooth` (weight from the curve's length).
pub fn smooth(values: &[f64]) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    let weight = 1.8 * (1.0 / (1.0 + (-0.05 * values.len() as f64).exp()) - 0.5);
    let mut last = values[0];
    values
        .iter()
        .map(|v| {
            last = last * weight + (1.0 - weight) * v;
            last
        })
        .collect()
}

/// Draw `(step, loss)` points (raw in light blue, smoothed in dark blue) into a PNG at `path`.
pub fn write_loss_png(path: &Path, points: &[(f64, f64)]) -> Result<()> {
    let mut c = Canvas {
        px: vec![255; W * H * 3],
    };
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let (x_min, x_max) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y_min, y_max) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x_min, x_max) = if finite.is_empty() {
        (0.0, 1.0)
    } else {
        (x_min, x_max.max(x_min + 1.0))
    };
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let (y_min, y_max) = if finite.is_empty() {
        (0.0, 1.0)
    } else {
        (y_min - pad, y_max + pad)
    };
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let to_px = |x: f64, y: f64| -> (f64, f64) {
        (
            LEFT as f64 + (x - x_min) / (x_max - x_min) * pw,
            TOP as f64 + (1.0 - (y - y_min) / (y_max - y_min)) * ph,
        )
    };
    let grey = [200, 200, 200];
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let y = y_min + (y_max - y_min) * f;
        let (_, py) = to_px(x_min, y);
        c.line((LEFT as f64, py), ((W - RIGHT) as f64, py), grey, 1);
        c.text(4, py as i64 - 7, &label(y), 2);
        let x = x_min + (x_max - x_min) * f;
        let (px, _) = to_px(x, y_min);
        c.line((px, TOP as f64), (px, (H - BOTTOM) as f64), grey, 1);
        let xl = if x_max - x_min >= 8.0 {
            format!("{:.0}", x.round())
        } else {
            label(x)
        };
        c.text(px as i64 - 10, (H - BOTTOM + 8) as i64, &xl, 2);
    }
    let black = [0, 0, 0];
    c.line(
        (LEFT as f64, (H - BOTTOM) as f64),
        ((W - RIGHT) as f64, (H - BOTTOM) as f64),
        black,
        2,
    );
    c.line(
        (LEFT as f64, TOP as f64),
        (LEFT as f64, (H - BOTTOM) as f64),
        black,
        2,
    );
    c.text(LEFT as i64, 10, "training loss", 3);
    c.text((W / 2) as i64 - 24, (H - 18) as i64, "step", 2);
    let raw: Vec<(f64, f64)> = finite.iter().map(|p| to_px(p.0, p.1)).collect();
    for w in raw.windows(2) {
        c.line(w[0], w[1], [160, 190, 230], 1);
    }
    let sm = smooth(&finite.iter().map(|p| p.1).collect::<Vec<_>>());
    let smp: Vec<(f64, f64)> = finite
        .iter()
        .zip(&sm)
        .map(|(p, s)| to_px(p.0, *s))
        .collect();
    for w in smp.windows(2) {
        c.line(w[0], w[1], [20, 60, 160], 2);
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc
            .write_header()
            .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
        wr.write_image_data(&c.px)
            .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
    }
    crate::weights::write_atomic(path, &bytes)
}
