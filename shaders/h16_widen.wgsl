// Widen a weight stored as 16-bit floats (bf16 or f16) to f32, exactly.
// `words` holds two values per u32: element 2i in the low 16 bits of word i, 2i + 1 in the high.
// bf16 is the top half of an f32; f16 is rebuilt field by field (subnormals as m · 2^-24, which is
// a normal f32; NaNs quieted as x86's F16C and the `half` crate do). One invocation per word.
// Every storage binding is read_write because cubecl may alias small buffers when this runs as a
// burn custom kernel.

struct Params {
    numel: u32,
    // 0: bf16, 1: f16.
    kind: u32,
    // Invocations per row of the dispatch grid (x workgroups × 64), for grids wider than 65535.
    row_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: Params;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn widen(h: u32) -> f32 {
    if (params.kind == 0u) {
        return bitcast<f32>(h << 16u);
    }
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // ±0 or a subnormal m · 2^-24 (exact: m < 2^10, the product is a normal f32).
        return bitcast<f32>(bitcast<u32>(f32(m) * 5.9604644775390625e-8) | sign);
    }
    if (e == 31u) {
        if (m == 0u) {
            return bitcast<f32>(sign | 0x7f800000u);
        }
        return bitcast<f32>(sign | 0x7fc00000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.y * params.row_stride + gid.x;
    let first = w * 2u;
    if (first >= params.numel) {
        return;
    }
    let word = words[w];
    out[first] = widen(word & 0xffffu);
    if (first + 1u < params.numel) {
        out[first + 1u] = widen(word >> 16u);
    }
}
