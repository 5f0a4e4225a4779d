//! 4-bit dequantization (with double quantization's scales) and 16-bit widening as `#[cube]`
//! kernels: cubecl compiles these for every runtime (WGSL, SPIR-V, CUDA), unlike shaders/'s
//! hand-written WGSL, which only the WGSL compiler takes — cubecl-wgpu's SPIR-V compiler refuses
//! precompiled text kernels, and CUDA has no WGSL. Where the WGSL kernels cannot launch, the
//! frozen-weight products dequantize with these into a fresh buffer and multiply with burn's
//! matmul (tensor cores where the runtime has them); the buffer is freed after the product.
//!
//! Every kernel does the same f32 operations as shaders/ and lorafit-quant's reference (one
//! multiply per 4-bit element, multiply then add for a double-quantized scale, a table lookup per
//! 16-bit value), so the results are bit-exact with them; `tests/it/quant_kernels.rs` checks that
//! on lavapipe by running these through the WGSL compiler.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::{self, CubeDim, calculate_cube_count_elemwise, prelude::*};

use crate::quant_ops::Q4Meta;

/// `absmax[b] = map[code b] · nested_absmax[b / nested_blocksize] + offset`, one unit per block;
/// the 8-bit codes are packed 4 per word, byte `b % 4` of word `b / 4`.
///
/// The product is rounded before the add, as bitsandbytes does: cubecl's SPIR-V carries no
/// `NoContraction`, and a Vulkan driver may fuse a multiply and an add into one FMA (Mesa 26's
/// lavapipe does: 104 of 4096 values an ulp off). So the product goes through one more multiply,
/// by `one` (1.0, known only at run time): a fused `scaled · one + offset` rounds exactly as the
/// separate add does.
#[cube(launch)]
fn nested_scales_kernel(
    codes: &[u32],
    nested_absmax: &[f32],
    map: &[f32],
    absmax: &mut [f32],
    nested_blocksize: u32,
    offset: f32,
    one: f32,
) {
    let b = ABSOLUTE_POS;
    if b < absmax.len() {
        let shift = 8u32 * (b % 4) as u32;
        let c = (codes[b / 4] >> shift) & 255u32;
        let scaled = map[c as usize] * nested_absmax[b / nested_blocksize as usize];
        absmax[b] = scaled * one + offset;
    }
}

/// One unit per packed word, i.e. 8 outputs: `out[i] = code[nibble i] · scales[i / blocksize]`.
/// Element `2j` is the high nibble of byte `j` of the word, `2j + 1` its low nibble.
#[cube(launch)]
fn dequant4_kernel(packed: &[u32], scales: &[f32], code: &[f32], out: &mut [f32], blocksize: u32) {
    let w = ABSOLUTE_POS;
    let first = w * 8;
    if first < out.len() {
        let word = packed[w];
        let scale = scales[first / blocksize as usize];
        for k in 0..8usize {
            let i = first + k;
            if i < out.len() {
                let shift = (8 * (k / 2) + 4 * (1 - k % 2)) as u32;
                out[i] = code[((word >> shift) & 15u32) as usize] * scale;
            }
        }
    }
}

/// One unit per output: the f32 value of 16-bit pattern `i` (element `2j` in the low half of
/// word `j`) looked up in the 65536-entry `table`.
#[cube(launch)]
fn widen16_kernel(words: &[u32], table: &[f32], out: &mut [f32]) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let shift = 16u32 * (i % 2) as u32;
        let bits = (words[i / 2] >> shift) & 65535u32;
        out[i] = table[bits as usize];
    }
}

/// A new contiguous f32 tensor of `shape` on `like`'s device.
pub fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let client = like.client.clone();
    let handle = client.empty(shape.num_elements() * 4);
    CubeTensor::new_contiguous(client, like.device.clone(), shape, handle, DType::F32)
}

/// The dispatch for `units` independent units: (cube count, cube dim).
fn grid(like: &CubeTensor, units: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(&like.client, units);
    (calculate_cube_count_elemwise(&like.client, units, dim), dim)
}

/// The f32 scale of every block: `absmax` itself, or double quantization undone.
pub fn block_scales(
    absmax: CubeTensor,
    scale_codes: CubeTensor,
    map: CubeTensor,
    meta: &Q4Meta,
) -> CubeTensor {
    if meta.nested_blocksize == 0 {
        return absmax;
    }
    let blocks = meta.blocks();
    let out = empty_f32(&absmax, Shape::new([blocks]));
    let (count, dim) = grid(&out, blocks);
    nested_scales_kernel::launch(
        &out.client,
        count,
        dim,
        scale_codes.into_buffer_arg(),
        absmax.into_buffer_arg(),
        map.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        meta.nested_blocksize as u32,
        meta.offset,
        1.0,
    );
    out
}

/// The dense `[out, inp]` f32 weight of contiguous packed `words` and per-block `scales`.
pub fn dequantize(
    words: CubeTensor,
    scales: CubeTensor,
    code: CubeTensor,
    meta: &Q4Meta,
) -> CubeTensor {
    let out = empty_f32(&words, Shape::new([meta.out, meta.inp]));
    let (count, dim) = grid(&out, (meta.out * meta.inp).div_ceil(8));
    dequant4_kernel::launch(
        &out.client,
        count,
        dim,
        words.into_buffer_arg(),
        scales.into_buffer_arg(),
        code.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        meta.blocksize as u32,
    );
    out
}

/// The f32 `[out, inp]` weight of contiguous 16-bit `words` (two per word).
pub fn widen16(words: CubeTensor, table: CubeTensor, out: usize, inp: usize) -> CubeTensor {
    let dense = empty_f32(&words, Shape::new([out, inp]));
    let (count, dim) = grid(&dense, out * inp);
    widen16_kernel::launch(
        &dense.client,
        count,
        dim,
        words.into_buffer_arg(),
        table.into_buffer_arg(),
        dense.clone().into_buffer_arg(),
    );
    dense
}

#[cfg(test)]
mod tests {
    //! The `#[cube]` kernels through cubecl's WGSL compiler on this machine's adapter (lavapipe in
    //! CI), bit for bit against lorafit-quant's reference, `Half::table` and shaders/'s kernels.

    use burn::backend::Cube;
    use lorafit_quant::{QuantType, Quantized4bit};

    use super::*;
    use crate::quant::Q4Parts;
    use crate::quant_ops::{Half, QuantOps};

    /// The default wgpu device, or `None` (with the reason printed) where there is no adapter.
    fn device() -> Option<cubecl::Device> {
        let device = cubecl::Device::Wgpu(Default::default());
        let probe = device.clone();
        match std::panic::catch_unwind(move || probe.client()) {
            Ok(_) => Some(device),
            Err(_) => {
                eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
                None
            }
        }
    }

    fn upload(device: &cubecl::Device, bytes: &[u8], dtype: DType) -> CubeTensor {
        let client = device.client();
        let handle = client.create_from_slice(bytes);
        let n = bytes.len() / 4;
        CubeTensor::new_contiguous(client, device.clone(), Shape::new([n]), handle, dtype)
    }

    fn floats(device: &cubecl::Device, v: &[f32]) -> CubeTensor {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        upload(device, &bytes, DType::F32)
    }

    fn ints(device: &cubecl::Device, v: &[i32]) -> CubeTensor {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        upload(device, &bytes, DType::I32)
    }

    fn read(t: CubeTensor) -> Vec<u32> {
        let bytes = t.client.read_one(t.handle).expect("read back");
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// (words, absmax, scale_codes, code, map, meta) as `Nf4Weight::upload` lays them out.
    fn parts(
        device: &cubecl::Device,
        q: &Quantized4bit,
    ) -> (
        CubeTensor,
        CubeTensor,
        CubeTensor,
        CubeTensor,
        CubeTensor,
        Q4Meta,
    ) {
        let p = Q4Parts::of(q).expect("parts");
        (
            ints(device, &p.words),
            floats(device, &p.absmax),
            ints(device, &p.scale_codes),
            floats(device, &p.code),
            floats(device, &p.map),
            p.meta,
        )
    }

    #[test]
    fn cube_dequantization_equals_bitsandbytes_and_the_wgsl_kernels() {
        let Some(device) = device() else { return };
        // Partial blocks, rows straddling blocks, and one large enough for a 2-D cube count.
        for (out, inp) in [(64, 64), (3, 40), (128, 72), (1024, 4160)] {
            let data: Vec<f32> = (0..out * inp)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
                .collect();
            for qt in [QuantType::Nf4, QuantType::Fp4] {
                for dq in [false, true] {
                    let q =
                        Quantized4bit::quantize(&data, &[out, inp], qt, 64, dq).expect("quantize");
                    let want = bits(&q.dequantize().expect("reference"));
                    let (words, absmax, scale_codes, code, map, meta) = parts(&device, &q);
                    let scales =
                        block_scales(absmax.clone(), scale_codes.clone(), map.clone(), &meta);
                    let got = read(dequantize(words.clone(), scales, code.clone(), &meta));
                    let case = format!("[{out}, {inp}] {qt:?} dq={dq}");
                    let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                    assert_eq!(
                        bad,
                        0,
                        "{case}: {bad} of {} differ from bitsandbytes",
                        want.len()
                    );
                    let wgsl = read(<Cube as QuantOps>::q4_dequantize(
                        words,
                        absmax,
                        scale_codes,
                        code,
                        map,
                        meta,
                    ));
                    assert!(got == wgsl, "{case}: the cube and WGSL kernels differ");
                }
            }
        }
    }

    /// Equal bit for bit, except that a NaN only has to be a NaN: the table quiets signalling
    /// NaNs as the `half` crate does, the WGSL kernel shifts the bits as they are.
    fn same_value(a: u32, b: u32) -> bool {
        let (x, y) = (f32::from_bits(a), f32::from_bits(b));
        a == b || (x.is_nan() && y.is_nan())
    }

    #[test]
    fn cube_widening_is_exact_for_every_bit_pattern() {
        let Some(device) = device() else { return };
        let patterns: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        for kind in [Half::Bf16, Half::F16] {
            let table = kind.table();
            let words = upload(&device, &patterns, DType::I32);
            let got = read(widen16(words.clone(), floats(&device, &table), 1, 65536));
            assert!(
                got == bits(&table),
                "{kind:?}: a widened pattern differs from `half`"
            );
            let wgsl = read(<Cube as QuantOps>::h16_widen(
                words,
                floats(&device, &table),
                kind,
                1,
                65536,
            ));
            let differ = (0..got.len())
                .filter(|&i| !same_value(got[i], wgsl[i]))
                .count();
            assert_eq!(
                differ, 0,
                "{kind:?}: the cube and WGSL kernels differ on {differ} patterns"
            );
        }
    }
}
