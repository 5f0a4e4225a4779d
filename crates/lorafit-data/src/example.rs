//! Tokenized examples: pre-tokenized JSONL (Contract 3), cutoff_len truncation and LLaMA-Factory's
//! packing.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// One tokenized example: labels unshifted, same length as input_ids, -100 = ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// RoPE positions; empty means 0, 1, 2, … (packed sequences restart at each sub-sequence).
    pub position_ids: Vec<u32>,
    /// `neat_packing`: the sub-sequence of each token, from 1 (0 = padding), LLaMA-Factory's
    /// packed `attention_mask`; attention stays within a sub-sequence. Empty: one sequence.
    pub segment_ids: Vec<u32>,
}

impl Example {
    /// Positions that contribute to the loss (labels shifted by one, as the model predicts the next token).
    pub fn loss_tokens(&self) -> usize {
        self.labels.iter().skip(1).filter(|l| **l >= 0).count()
    }
}

fn data_err(path: &Path, what: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::data(path, what, msg)
}

fn ids_of(path: &Path, line: usize, key: &str, v: &Value, signed: bool) -> Result<Vec<i64>> {
    let arr = v.as_array().ok_or_else(|| {
        data_err(
            path,
            format!("line {line}"),
            format!("`{key}` must be a list of integers"),
        )
    })?;
    arr.iter()
        .map(|x| {
            x.as_i64()
                .filter(|i| signed || *i >= 0)
                .filter(|i| *i <= u32::MAX as i64)
                .ok_or_else(|| {
                    data_err(
                        path,
                        format!("line {line}"),
                        format!(
                            "`{key}` holds {x}, not a {} integer",
                            if signed {
                                "32-bit"
                            } else {
                                "non-negative 32-bit"
                            }
                        ),
                    )
                })
        })
        .collect()
}

/// Read a pre-tokenized JSONL file: each line `{"input_ids": [...], "labels": [...]?}`.
pub fn load_pretokenized(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| data_err(path, format!("line {n}"), format!("not valid JSON: {e}")))?;
        let ids = v
            .get("input_ids")
            .ok_or_else(|| data_err(path, format!("line {n}"), "has no `input_ids`"))?;
        let ids: Vec<u32> = ids_of(path, n, "input_ids", ids, false)?
            .into_iter()
            .map(|x| x as u32)
            .collect();
        if ids.is_empty() {
            return Err(data_err(path, format!("line {n}"), "`input_ids` is empty"));
        }
        let labels = match v.get("labels") {
            None | Some(Value::Null) => ids.iter().map(|&x| x as i64).collect(),
            Some(l) => {
                let l = ids_of(path, n, "labels", l, true)?;
                if l.len() != ids.len() {
                    return Err(data_err(
                        path,
                        format!("line {n}"),
                        format!(
                            "`labels` has {} entries but `input_ids` has {} (they must be the same length, unshifted)",
                            l.len(),
                            ids.len()
                        ),
                    ));
                }
                if let Some(bad) = l.iter().find(|x| **x < 0 && **x != -100) {
                    return Err(data_err(
                        path,
                        format!("line {n}"),
                        format!("`labels` holds {bad}; negative labels must be -100 (ignored)"),
                    ));
                }
                l
            }
        };
        out.push(Example {
            input_ids: ids,
            labels,
            ..Default::default()
        });
    }
    if out.is_empty() {
        return Err(data_err(path, "the file", "has no examples"));
    }
    Ok(out)
}

/// Keep the first `cutoff_len` tokens of each example.
pub fn truncate(examples: &mut [Example], cutoff_len: usize) {
    for e in examples {
        e.input_ids.truncate(cutoff_len);
        e.labels.truncate(cutoff_len);
    }
}

/// LLaMA-Factory's `greedy_knapsack`: lengths sorted ascending, each bin repeatedly takes the
/// longest remaining length that still fits.
pub fn greedy_knapsack(mut lengths: Vec<usize>, capacity: usize) -> Vec<Vec<usize>> {
    lengths.sort_unstable();
    let mut bins = Vec::new();
    while !lengths.is_empty() {
        let mut bin = Vec::new();
        let mut remaining = capacity;
        loop {
            let idx = lengths.partition_point(|&l| l <= remaining);
            if idx == 0 {
                break;
            }
            remaining -= lengths[idx - 1];
            bin.push(lengths.remove(idx - 1));
        }
        if bin.is_empty() {
            break;
        }
        bins.push(bin);
    }
    bins
}

/// Pack examples as LLaMA-Factory's `packing: true`: examples longer than `capacity` are dropped,
/// the rest packed with [`greedy_knapsack`], each pack padded with `pad_id` (label -100,
/// position 0) to `capacity + 1` tokens; positions restart at each example. With `neat`
/// (`neat_packing`) each token also gets its sub-sequence (1, 2, …; padding 0) and attention is
/// blocked between sub-sequences; without it, packed examples attend to each other, as in
/// LLaMA-Factory.
pub fn pack(examples: Vec<Example>, capacity: usize, pad_id: u32, neat: bool) -> Vec<Example> {
    let mut by_len: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    let mut lengths = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        let n = e.input_ids.len();
        if n <= capacity {
            lengths.push(n);
            by_len.entry(n).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for bin in greedy_knapsack(lengths, capacity) {
        let mut p = Example::default();
        for (k, len) in bin.into_iter().enumerate() {
            let Some(i) = by_len.get_mut(&len).and_then(Vec::pop) else {
                continue;
            };
            let e = &examples[i];
            p.input_ids.extend_from_slice(&e.input_ids);
            p.labels.extend_from_slice(&e.labels);
            p.position_ids.extend(0..e.input_ids.len() as u32);
            if neat {
                p.segment_ids
                    .extend(std::iter::repeat_n(k as u32 + 1, e.input_ids.len()));
            }
        }
        let pad = (capacity + 1).saturating_sub(p.input_ids.len());
        p.input_ids.extend(std::iter::repeat_n(pad_id, pad));
        p.labels.extend(std::iter::repeat_n(-100, pad));
        p.position_ids.extend(std::iter::repeat_n(0, pad));
        if neat {
            p.segment_ids.extend(std::iter::repeat_n(0, pad));
        }
        out.push(p);
    }
    out
}
