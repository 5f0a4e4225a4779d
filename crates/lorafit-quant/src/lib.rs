//! 4-bit blockwise quantization (NF4 and FP4) that reproduces bitsandbytes bit for bit, with its
//! double quantization of the scales, and the `*-bnb-4bit` checkpoint layout.
//!
//! Layout facts (bitsandbytes `functional.quantize_4bit`, default/CPU backends): the weight is
//! flattened row-major and cut into blocks of `blocksize` (64); each block is scaled by the
//! reciprocal of its fp32 absmax (the partial last block is *divided* by its absmax), clamped to
//! [-1, 1] and rounded to the nearest code (ties go to the lower code: `torch.bucketize` on the
//! midpoints); element 2j goes in the high nibble. Double quantization subtracts the mean absmax
//! and quantizes the rest in blocks of 256 with the signed 8-bit dynamic map — to the nearest code
//! on CUDA, through a 65536-step lookup table in bitsandbytes' CPU kernel ([`DqRounding`]).

use serde::{Deserialize, Serialize};

/// Errors of this crate: each names what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(
        "blocksize {0} is not supported; bitsandbytes allows 32, 64, 128, 256, 512, 1024, 2048, 4096"
    )]
    Blocksize(usize),
    #[error("shape {shape:?} holds {expected} elements but {what} has {got}")]
    Shape {
        shape: Vec<usize>,
        expected: usize,
        what: &'static str,
        got: usize,
    },
    #[error("input element {index} is {value}: only finite values can be quantized")]
    NonFinite { index: usize, value: f32 },
    #[error("quant_state: {0}")]
    QuantState(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// The 4-bit data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    Nf4,
    Fp4,
}

impl QuantType {
    /// The 16 code values, index = the stored nibble (bitsandbytes `get_4bit_type`).
    pub fn code(self) -> &'static [f32; 16] {
        match self {
            QuantType::Nf4 => &NF4_CODE,
            QuantType::Fp4 => &FP4_CODE,
        }
    }
    fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }
}

/// NF4: the quantiles of N(0, 1) normalised to [-1, 1] (bitsandbytes' table, as fp32).
#[allow(clippy::excessive_precision)] // bitsandbytes prints these digits; the f32 is the same
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// FP4 (e2m1 without inf/nan, bitsandbytes' scaling); index 8 is a second +0.0, as in bitsandbytes.
#[allow(clippy::excessive_precision)]
pub const FP4_CODE: [f32; 16] = [
    0.0,
    0.0052083334885537624,
    0.6666666865348816,
    1.0,
    0.3333333432674408,
    0.5,
    0.1666666716337204,
    0.25,
    0.0,
    -0.0052083334885537624,
    -0.6666666865348816,
    -1.0,
    -0.3333333432674408,
    -0.5,
    -0.1666666716337204,
    -0.25,
];

const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// bitsandbytes `create_dynamic_map(signed=True)`: the 8-bit code double quantization uses.
pub fn dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// Block sizes bitsandbytes accepts.
pub const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A codebook prepared for rounding: midpoints between sorted codes and the sorted → stored index map.
struct Rounder {
    bounds: Vec<f32>,
    order: Vec<u8>,
}

impl Rounder {
    fn new(code: &[f32]) -> Self {
        let mut order: Vec<usize> = (0..code.len()).collect();
        // -0.0 and 0.0 compare equal, as in torch's argsort; the lower index comes first.
        order.sort_by(|&a, &b| {
            code[a]
                .partial_cmp(&code[b])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        let sorted: Vec<f32> = order.iter().map(|&i| code[i]).collect();
        let bounds = sorted.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        Rounder {
            bounds,
            order: order.into_iter().map(|i| i as u8).collect(),
        }
    }

    /// `torch.bucketize(x, bounds, right=False)` then the stored index.
    fn round(&self, x: f32) -> u8 {
        let pos = self.bounds.partition_point(|&b| b < x);
        self.order[pos]
    }
}

/// Blockwise absmax scaling and rounding, shared by the 4-bit and the 8-bit (nested) paths.
/// `clamp_partial` stores the partial last block's absmax clamped to 1e-38 (bitsandbytes' 4-bit
/// reference path does; its 8-bit blockwise kernel stores the raw maximum).
fn quantize_blocks(
    data: &[f32],
    blocksize: usize,
    rounder: &Rounder,
    clamp_partial: bool,
) -> (Vec<u8>, Vec<f32>) {
    let n = data.len();
    let full = n - n % blocksize;
    let mut codes = Vec::with_capacity(n + 1);
    let mut absmax = Vec::with_capacity(n.div_ceil(blocksize));
    for block in data[..full].chunks(blocksize) {
        let am = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let inv = 1.0f32 / am.max(1e-38);
        codes.extend(
            block
                .iter()
                .map(|&x| rounder.round((x * inv).clamp(-1.0, 1.0))),
        );
        absmax.push(am);
    }
    if full < n {
        // bitsandbytes divides the partial block instead of multiplying by the reciprocal.
        let rest = &data[full..];
        let raw = rest.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let am = if clamp_partial { raw.max(1e-38) } else { raw };
        codes.extend(
            rest.iter()
                .map(|&x| rounder.round((x / am).clamp(-1.0, 1.0))),
        );
        absmax.push(if clamp_partial { am } else { raw });
    }
    (codes, absmax)
}

/// How double quantization rounds the centered absmax values to their 8-bit codes. The two agree
/// for about 99.5 % of values; a checkpoint is only reproduced bit for bit in its maker's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DqRounding {
    /// To the nearest code: bitsandbytes' CUDA kernel and its reference implementation.
    #[default]
    Nearest,
    /// bitsandbytes' C++ CPU kernel since 0.50.1: the scaled value is binned into one of 65536
    /// steps over [-1, 1] (`(x + 1) / 2 · 65535 + ½`, truncated) and the step's nearest code taken;
    /// the partial last block is multiplied by the reciprocal too, and an all-zero block gets code 0.
    CpuTable,
}

/// Steps of bitsandbytes' CPU lookup table.
const CPU_TABLE_STEPS: usize = 65536;

/// bitsandbytes' CPU blockwise quantization ([`DqRounding::CpuTable`]) with a sorted codebook.
fn quantize_blocks_cpu_table(data: &[f32], blocksize: usize, code: &[f32]) -> (Vec<u8>, Vec<f32>) {
    debug_assert!(
        code.windows(2).all(|w| w[0] <= w[1]),
        "the codebook is sorted"
    );
    let mids: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let steps = (CPU_TABLE_STEPS - 1) as f32;
    let mut table = vec![0u8; CPU_TABLE_STEPS];
    let mut idx = 0usize;
    for (i, slot) in table.iter_mut().enumerate() {
        let val = -1.0f32 + (2.0 * i as f32) / steps;
        while idx < mids.len() && mids[idx] < val {
            idx += 1;
        }
        *slot = idx as u8;
    }
    let mut codes = Vec::with_capacity(data.len() + 1);
    let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
    for block in data.chunks(blocksize) {
        let am = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        absmax.push(am);
        if am == 0.0 {
            codes.extend(std::iter::repeat_n(0u8, block.len()));
            continue;
        }
        let inv = 1.0f32 / am;
        codes.extend(block.iter().map(|&x| {
            let v = (x * inv).clamp(-1.0, 1.0);
            table[((v + 1.0) * 0.5 * steps + 0.5) as u16 as usize]
        }));
    }
    (codes, absmax)
}

/// The absmax scales of a 4-bit tensor, plain or double-quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// fp32 per block.
    Plain(Vec<f32>),
    /// 8-bit codes into `code` (256 values), scaled per `nested_blocksize` codes, plus `offset`.
    Nested {
        codes: Vec<u8>,
        nested_absmax: Vec<f32>,
        code: Vec<f32>,
        nested_blocksize: usize,
        offset: f32,
    },
}

impl Absmax {
    /// The fp32 scale of every block, as bitsandbytes dequantizes them.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Absmax::Plain(v) => v.clone(),
            Absmax::Nested {
                codes,
                nested_absmax,
                code,
                nested_blocksize,
                offset,
            } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| code[c as usize] * nested_absmax[i / nested_blocksize] + offset)
                .collect(),
        }
    }
    fn len(&self) -> usize {
        match self {
            Absmax::Plain(v) => v.len(),
            Absmax::Nested { codes, .. } => codes.len(),
        }
    }
}

/// Lanes of the vectors torch's fp32 sum kernel loads on the x86 CPUs the fixtures were made on:
/// 8 (256 bits), measured — torch 2.15 reports AVX-512 there, yet only an 8-lane cascade
/// reproduces its sums (`scripts/make_cpu_order_fixtures.py` records them for many lengths).
const TORCH_LANES: usize = 8;

/// Above this many elements torch splits a full reduction over its threads (`GRAIN_SIZE`).
const TORCH_GRAIN: usize = 32768;

fn ceil_log2(x: usize) -> usize {
    if x <= 1 {
        0
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

#[allow(clippy::needless_range_loop)] // mirrors the C++ loop structure, operation for operation
/// torch's `multi_row_sum`: a 4-level cascade over `size` rows of `width` accumulators each.
fn multi_row_sum(
    load: impl Fn(usize, usize) -> [f32; TORCH_LANES],
    size: usize,
    nrows: usize,
) -> Vec<[f32; TORCH_LANES]> {
    const LEVELS: usize = 4;
    let level_power = 4usize.max(ceil_log2(size) / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let add = |a: &mut [f32; TORCH_LANES], b: &[f32; TORCH_LANES]| {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += *y)
    };
    let mut acc = vec![vec![[0.0f32; TORCH_LANES]; nrows]; LEVELS];
    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            for k in 0..nrows {
                let v = load(i, k);
                add(&mut acc[0][k], &v);
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..nrows {
                let lower = std::mem::replace(&mut acc[j - 1][k], [0.0; TORCH_LANES]);
                add(&mut acc[j][k], &lower);
            }
            if i & (level_mask << (j * level_power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        for k in 0..nrows {
            let v = load(i, k);
            add(&mut acc[0][k], &v);
        }
        i += 1;
    }
    for j in 1..LEVELS {
        for k in 0..nrows {
            let upper = acc[j][k];
            add(&mut acc[0][k], &upper);
        }
    }
    std::mem::take(&mut acc[0])
}

/// torch's `row_sum`: 4-way instruction-level parallel partial sums, then combined.
fn row_sum(load: impl Fn(usize) -> [f32; TORCH_LANES], size: usize) -> [f32; TORCH_LANES] {
    const ILP: usize = 4;
    let size_ilp = size / ILP;
    let mut partial = multi_row_sum(|i, k| load(i * ILP + k), size_ilp, ILP);
    for i in size_ilp * ILP..size {
        let v = load(i);
        partial[0].iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    for k in 1..ILP {
        let p = partial[k];
        partial[0].iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    partial[0]
}

/// `torch.Tensor.sum()` of a contiguous fp32 vector on one thread, reproduced operation for
/// operation (aten/src/ATen/native/cpu/SumKernel.cpp `cascade_sum` → `vectorized_inner_sum`):
/// bitsandbytes' double-quant offset is `absmax.mean()`, and any other summation order differs in
/// the last bit. (CUDA sums in another order, so checkpoints quantized there carry their own
/// offset — loading them uses the stored value.)
fn torch_sum_serial(v: &[f32]) -> f32 {
    let n = v.len();
    if n < TORCH_LANES {
        // The scalar path: the same cascade, one lane wide.
        let scalar = |i: usize| {
            let mut a = [0.0f32; TORCH_LANES];
            a[0] = v[i];
            a
        };
        return row_sum(scalar, n)[0];
    }
    let vec_size = n / TORCH_LANES;
    let vector = |i: usize| {
        let mut a = [0.0f32; TORCH_LANES];
        a.copy_from_slice(&v[i * TORCH_LANES..(i + 1) * TORCH_LANES]);
        a
    };
    let lanes = row_sum(vector, vec_size);
    // The tail first, then the lanes added to it left to right.
    let mut acc = 0.0f32;
    for &x in &v[vec_size * TORCH_LANES..] {
        acc += x;
    }
    for x in lanes {
        acc += x;
    }
    acc
}

/// `torch.Tensor.sum()` with `threads` intra-op threads: above [`TORCH_GRAIN`] elements torch
/// reduces `min(threads, ⌈n / grain⌉)` equal chunks separately and adds their sums in order.
pub fn torch_sum(v: &[f32], threads: usize) -> f32 {
    let n = v.len();
    let threads = threads.max(1);
    if n <= TORCH_GRAIN || threads == 1 {
        return torch_sum_serial(v);
    }
    let tasks = threads.min(n.div_ceil(TORCH_GRAIN));
    let chunk = n.div_ceil(tasks);
    v.chunks(chunk)
        .map(torch_sum_serial)
        .fold(0.0f32, |acc, s| acc + s)
}

/// torch's fp32 `mean()` on one CPU thread: the sum divided by the count. (lorafit quantizes at
/// load on one thread's order, whatever the machine, so the result does not depend on it.)
fn torch_mean(v: &[f32]) -> f32 {
    torch_sum(v, 1) / v.len().max(1) as f32
}

/// A 4-bit quantized tensor in bitsandbytes' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized4bit {
    pub quant_type: QuantType,
    pub blocksize: usize,
    /// The dense tensor's shape ([out, in] for a linear weight).
    pub shape: Vec<usize>,
    /// Two codes per byte, element 2j in the high nibble; ceil(numel / 2) bytes.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
}

impl Quantized4bit {
    /// Quantize `data` (row-major, `shape`) like `bitsandbytes.functional.quantize_4bit` on CUDA
    /// (double quantization rounds to the nearest code).
    pub fn quantize(
        data: &[f32],
        shape: &[usize],
        quant_type: QuantType,
        blocksize: usize,
        double_quant: bool,
    ) -> Result<Self, Error> {
        Self::quantize_with(
            data,
            shape,
            quant_type,
            blocksize,
            double_quant,
            DqRounding::Nearest,
        )
    }

    /// [`Quantized4bit::quantize`] with double quantization rounded as `rounding` says (the 4-bit
    /// codes round to the nearest code on every bitsandbytes backend).
    pub fn quantize_with(
        data: &[f32],
        shape: &[usize],
        quant_type: QuantType,
        blocksize: usize,
        double_quant: bool,
        rounding: DqRounding,
    ) -> Result<Self, Error> {
        if !BLOCKSIZES.contains(&blocksize) {
            return Err(Error::Blocksize(blocksize));
        }
        let numel = checked_numel(shape)?;
        if numel != data.len() {
            return Err(Error::Shape {
                shape: shape.to_vec(),
                expected: numel,
                what: "the data",
                got: data.len(),
            });
        }
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite { index, value });
        }
        let rounder = Rounder::new(quant_type.code());
        let (mut codes, absmax) = quantize_blocks(data, blocksize, &rounder, true);
        if codes.len() % 2 == 1 {
            codes.push(rounder.round(0.0));
        }
        let packed = codes.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
        let absmax = if double_quant {
            nest_with_offset(&absmax, torch_mean(&absmax), rounding)
        } else {
            Absmax::Plain(absmax)
        };
        Ok(Quantized4bit {
            quant_type,
            blocksize,
            shape: shape.to_vec(),
            packed,
            absmax,
        })
    }

    /// Number of dense elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Check that the parts agree with each other (a loaded checkpoint may not).
    pub fn validate(&self) -> Result<(), Error> {
        if !BLOCKSIZES.contains(&self.blocksize) {
            return Err(Error::Blocksize(self.blocksize));
        }
        let n = checked_numel(&self.shape)?;
        if self.packed.len() != n.div_ceil(2) {
            return Err(Error::Shape {
                shape: self.shape.clone(),
                expected: n.div_ceil(2),
                what: "the packed weight (bytes)",
                got: self.packed.len(),
            });
        }
        let blocks = n.div_ceil(self.blocksize);
        if self.absmax.len() != blocks {
            return Err(Error::Shape {
                shape: self.shape.clone(),
                expected: blocks,
                what: "absmax (blocks)",
                got: self.absmax.len(),
            });
        }
        if let Absmax::Nested {
            nested_absmax,
            code,
            nested_blocksize,
            ..
        } = &self.absmax
        {
            if code.len() != 256 {
                return Err(Error::QuantState(format!(
                    "nested_quant_map must have 256 values, has {}",
                    code.len()
                )));
            }
            if *nested_blocksize == 0 || nested_absmax.len() != blocks.div_ceil(*nested_blocksize) {
                return Err(Error::QuantState(format!(
                    "nested_absmax has {} values; {} blocks in groups of {nested_blocksize} need {}",
                    nested_absmax.len(),
                    blocks,
                    blocks.div_ceil((*nested_blocksize).max(1))
                )));
            }
        }
        Ok(())
    }

    /// The stored 4-bit code of element `i`.
    pub fn code_index(&self, i: usize) -> u8 {
        let b = self.packed[i / 2];
        if i.is_multiple_of(2) {
            b >> 4
        } else {
            b & 0x0f
        }
    }

    /// Dequantize to fp32, row-major, like `bitsandbytes.functional.dequantize_4bit`.
    pub fn dequantize(&self) -> Result<Vec<f32>, Error> {
        self.validate()?;
        let code = self.quant_type.code();
        let scales = self.absmax.to_f32();
        Ok((0..self.numel())
            .map(|i| code[self.code_index(i) as usize] * scales[i / self.blocksize])
            .collect())
    }
}

fn checked_numel(shape: &[usize]) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::Shape {
            shape: shape.to_vec(),
            expected: usize::MAX,
            what: "the shape's product (overflows)",
            got: 0,
        })
}

/// Double quantization with a given offset: subtract it, quantize blockwise (256) with the signed
/// dynamic map. bitsandbytes takes `absmax.mean()`, whose last bit depends on the device's
/// summation order (CUDA and CPUs differ, and so do CPU thread counts above 32768 blocks);
/// [`torch_sum`] reproduces torch's x86 CPU order at every length, and everything after the
/// offset is exact in either [`DqRounding`].
pub fn nest_with_offset(absmax: &[f32], offset: f32, rounding: DqRounding) -> Absmax {
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let code = dynamic_map();
    let (codes, nested_absmax) = match rounding {
        DqRounding::Nearest => quantize_blocks(&centered, 256, &Rounder::new(&code), false),
        DqRounding::CpuTable => quantize_blocks_cpu_table(&centered, 256, &code),
    };
    Absmax::Nested {
        codes,
        nested_absmax,
        code: code.to_vec(),
        nested_blocksize: 256,
        offset,
    }
}

pub mod checkpoint;
pub mod int8;
pub use int8::Quantized8bit;
