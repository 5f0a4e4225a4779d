//! `training_loss.png` (and `training_eval_loss.png`): the loss per logging step and its smoothed
//! curve, as LLaMA-Factory's `plot_loss` draws them with matplotlib (640 × 480, "original" at 40 %
//! opacity, "smoothed" by its moving average, title `training loss of OUTPUT_DIR`), drawn with
//! plotters; the eval loss, when there is one, is a third series on the training plot. The font
//! is DejaVu Sans cut down to ASCII (`assets/`, `scripts/subset_plot_font.py`), compiled in, so
//! no system fonts are needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};

const W: u32 = 640;
const H: u32 = 480;
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-plot.ttf");
/// matplotlib's first colour (tab:blue) and second (tab:orange).
const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "the plot's embedded font does not parse".into(),
        ))
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

/// One figure: `points` (step, value) raw and smoothed, optionally `eval` points, titled
/// `title`, its y axis `ylabel`; returns the RGB pixels.
pub fn render(
    title: &str,
    ylabel: &str,
    points: &[(f64, f64)],
    eval: &[(f64, f64)],
) -> Result<Vec<u8>> {
    font()?;
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let evals: Vec<(f64, f64)> = eval
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let all = || finite.iter().chain(&evals);
    let (mut x0, mut x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    (y0, y1) = (y0 - pad, y1 + pad);
    let mut px = vec![0u8; (W * H * 3) as usize];
    let draw_err = |e: String| Error::Invalid(format!("drawing the loss plot: {e}"));
    {
        let root = BitMapBackend::with_buffer(&mut px, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(ylabel)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .x_label_formatter(&|x| {
                if (x1 - x0) >= 8.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.1}")
                }
            })
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        let faint = BLUE.mix(0.4);
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                faint.stroke_width(1),
            ))
            .map_err(|e| draw_err(e.to_string()))?
            .label("original")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], faint));
        let sm = smooth(&finite.iter().map(|p| p.1).collect::<Vec<_>>());
        chart
            .draw_series(LineSeries::new(
                finite.iter().zip(&sm).map(|(p, s)| (p.0, *s)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| draw_err(e.to_string()))?
            .label("smoothed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if !evals.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    evals.iter().copied(),
                    ORANGE.stroke_width(2),
                ))
                .map_err(|e| draw_err(e.to_string()))?;
            chart
                .draw_series(evals.iter().map(|&p| Circle::new(p, 3, ORANGE.filled())))
                .map_err(|e| draw_err(e.to_string()))?
                .label("eval")
                .legend(|(x, y)| Circle::new((x + 10, y), 3, ORANGE.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    Ok(px)
}

/// Encode RGB pixels of a `W × H` figure as PNG.
fn encode(px: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W, H);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc
            .write_header()
            .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
        wr.write_image_data(px)
            .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
    }
    Ok(bytes)
}

/// Draw `(step, loss)` points (and eval points, if any) as LLaMA-Factory's plot of `key` for
/// `output_dir` into a PNG at `path` (written atomically).
pub fn write_loss_png(
    path: &Path,
    key: &str,
    output_dir: &Path,
    points: &[(f64, f64)],
    eval: &[(f64, f64)],
) -> Result<()> {
    let title = format!("training {key} of {}", output_dir.display());
    let px = render(&title, key, points, eval)?;
    crate::weights::write_atomic(path, &encode(&px, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(px: &[u8], pred: impl Fn([u8; 3]) -> bool) -> usize {
        px.chunks(3).filter(|c| pred([c[0], c[1], c[2]])).count()
    }

    #[test]
    fn draws_curves_and_text() {
        let pts: Vec<(f64, f64)> = (1..=40)
            .map(|s| {
                (
                    s as f64,
                    3.0 / (s as f64).sqrt() + 0.1 * ((s * 7) % 5) as f64,
                )
            })
            .collect();
        let eval = [(10.0, 1.4), (20.0, 1.1), (30.0, 0.9), (40.0, 0.85)];
        let px = render("training loss of saves/x", "loss", &pts, &eval).expect("draws");
        assert_eq!(px.len(), (W * H * 3) as usize);
        let blue = count(&px, |c| c == [0x1f, 0x77, 0xb4]);
        let orange = count(&px, |c| c == [0xff, 0x7f, 0x0e]);
        assert!(blue > 300, "the smoothed line: {blue} pixels");
        assert!(orange > 50, "the eval series: {orange} pixels");
        // The caption rows hold anti-aliased dark text (the embedded font renders).
        let caption = &px[..(W * 30 * 3) as usize];
        let dark = count(caption, |c| c.iter().all(|&v| v < 100));
        assert!(dark > 40, "title text: {dark} dark pixels");
        // Without eval points there is no orange.
        let px = render("t", "loss", &pts, &[]).expect("draws");
        assert_eq!(count(&px, |c| c == [0xff, 0x7f, 0x0e]), 0);
        // Degenerate input still draws.
        render("t", "loss", &[], &[]).expect("empty");
        render("t", "loss", &[(1.0, f64::NAN), (2.0, 2.0)], &[]).expect("one finite point");
    }

    #[test]
    fn smooth_is_llamafactorys_moving_average() {
        // weight = 1.8·(σ(0.05·3) − 0.5) for three points.
        let w = 1.8 * (1.0 / (1.0 + (-0.15f64).exp()) - 0.5);
        let s = smooth(&[1.0, 0.0, 2.0]);
        assert_eq!(s[0], 1.0);
        assert!((s[1] - w).abs() < 1e-15);
        assert!((s[2] - (w * w + (1.0 - w) * 2.0)).abs() < 1e-15);
    }
}
