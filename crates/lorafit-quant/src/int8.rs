//! 8-bit row-wise quantization of weights as bitsandbytes' `Linear8bitLt` stores them (LLM.int8
//! storage, `load_in_8bit=True`, what LLaMA-Factory's `quantization_bit: 8` asks for).
//!
//! Facts (bitsandbytes 0.50 `Int8Params._quantize` and `int8_vectorwise_quant`, default backend):
//! the weight is first cast to fp16; `SCB[r]` is the fp32 of row r's largest |value|; `CB = round(
//! w16 · (127 / SCB))` in fp32 (the division is torch's `reciprocal() * 127`), ties to even, as int8. Training on the CPU (`MatMul8bitFp`)
//! uses `W = f32(CB) · (SCB · f32(1/127))` and an fp32 linear, forward and backward; the CUDA path
//! (int8 matmul with outlier decomposition) approximates the same product.

use half::f16;

use crate::Error;

/// An int8 weight `[rows, cols]` with one fp32 scale per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized8bit {
    pub rows: usize,
    pub cols: usize,
    /// Row-major int8 codes (`CB`).
    pub cb: Vec<i8>,
    /// Per-row absmax of the fp16 weight (`SCB`).
    pub scb: Vec<f32>,
}

impl Quantized8bit {
    /// Quantize a row-major `[rows, cols]` f32 weight exactly as bitsandbytes does.
    pub fn quantize(data: &[f32], rows: usize, cols: usize) -> Result<Self, Error> {
        if data.len() != rows * cols {
            return Err(Error::Shape {
                shape: vec![rows, cols],
                expected: rows * cols,
                what: "the weight",
                got: data.len(),
            });
        }
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite { index, value });
        }
        let mut cb = Vec::with_capacity(rows * cols);
        let mut scb = Vec::with_capacity(rows);
        for row in data.chunks(cols.max(1)).take(rows) {
            let h: Vec<f32> = row.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            let absmax = h.iter().fold(0f32, |m, v| m.max(v.abs()));
            // torch evaluates `127.0 / row_stats` as `row_stats.reciprocal() * 127`.
            let inv = (1.0f32 / absmax) * 127.0;
            // A zero row: torch computes 0 · inf = NaN, which its int8 cast turns into 0.
            cb.extend(h.iter().map(|&v| {
                let q = (v * inv).round_ties_even();
                if q.is_nan() { 0 } else { q as i8 }
            }));
            scb.push(absmax);
        }
        Ok(Quantized8bit {
            rows,
            cols,
            cb,
            scb,
        })
    }

    /// The per-row multiplier bitsandbytes applies, `SCB · f32(1/127)`.
    pub fn row_scales(&self) -> Vec<f32> {
        let k = (1.0f64 / 127.0) as f32;
        self.scb.iter().map(|s| s * k).collect()
    }

    /// The f32 weight bitsandbytes trains with on the CPU, `f32(CB) · row_scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        let scales = self.row_scales();
        self.cb
            .chunks(self.cols.max(1))
            .zip(&scales)
            .flat_map(|(row, &s)| row.iter().map(move |&c| c as f32 * s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rows_bad_values_and_ties() {
        // Row 0 is all zeros; row 1 has |max| 127, so codes equal the values, with 0.5 → 0 and
        // 1.5 → 2 (ties to even) and 2.5 → 2.
        let q =
            Quantized8bit::quantize(&[0.0, 0.0, 0.0, 0.0, 127.0, 0.5, 1.5, -2.5], 2, 4).expect("q");
        assert_eq!(q.cb, [0, 0, 0, 0, 127, 0, 2, -2]);
        assert_eq!(q.scb, [0.0, 127.0]);
        assert_eq!(&q.dequantize()[..4], &[0.0; 4]);
        let e = Quantized8bit::quantize(&[1.0, f32::NAN], 1, 2).expect_err("nan");
        assert!(e.to_string().contains("element 1"), "{e}");
        let e = Quantized8bit::quantize(&[1.0; 5], 2, 3).expect_err("shape");
        assert!(e.to_string().contains("[2, 3]"), "{e}");
    }
}
