// Fused 4-bit dequant-matmul for few rows (QLoRA with small batches, or decoding): the same
// products as q4_matmul.wgsl, with one workgroup per output column j and per group of 8 rows of
// `a`; its 64 invocations split the summed dimension and reduce in workgroup memory, so every
// invocation has work even when m = 1. For x·Wᵀ with rows of whole words (n_in % 8 = 0) each
// invocation takes a packed word (8 elements sharing one scale) at a time.
//   trans = 1: out[m, j] = sum_t a[m, t] * W[j, t]      trans = 0: out[m, j] = sum_t a[m, t] * W[t, j]
// W element i (row-major) = code[nibble(i)] * absmax[i / blocksize]; element 2j is the high nibble
// of byte j of `packed` (little-endian u32 words), element 2j + 1 its low nibble. Every storage
// binding is read_write because cubecl may alias small buffers.

struct Params {
    m: u32,
    t: u32,
    j: u32,
    n_in: u32,
    blocksize: u32,
    trans: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> code: array<f32, 16>;
@group(0) @binding(4) var<storage, read_write> params: Params;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const R: u32 = 8u;
const WG: u32 = 64u;

var<workgroup> partial: array<f32, 512>; // [R][WG]

fn weight(i: u32) -> f32 {
    let word = packed[i / 8u];
    let byte_in_word = (i % 8u) / 2u;
    let shift = 8u * byte_in_word + 4u * (1u - (i % 2u));
    return code[(word >> shift) & 0xfu] * absmax[i / params.blocksize];
}

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let j = wid.x;
    let r0 = wid.y * R;
    let t_len = params.t;
    let rows = min(R, params.m - min(r0, params.m));
    var acc: array<f32, 8>;
    for (var r = 0u; r < R; r++) {
        acc[r] = 0.0;
    }
    if (params.trans == 1u && params.n_in % 8u == 0u) {
        // Row j of W is whole packed words: one word (8 elements, one scale) per step.
        let words_per_row = params.n_in / 8u;
        for (var tw = tid; tw < words_per_row; tw += WG) {
            let wi = j * words_per_row + tw;
            let word = packed[wi];
            let scale = absmax[(wi * 8u) / params.blocksize];
            let t0 = tw * 8u;
            for (var k = 0u; k < 8u; k++) {
                let shift = 8u * (k / 2u) + 4u * (1u - (k % 2u));
                let w = code[(word >> shift) & 0xfu] * scale;
                for (var r = 0u; r < R; r++) {
                    if (r < rows) {
                        acc[r] = acc[r] + a[(r0 + r) * t_len + t0 + k] * w;
                    }
                }
            }
        }
    } else {
        for (var t = tid; t < t_len; t += WG) {
            var i: u32;
            if (params.trans == 1u) {
                i = j * params.n_in + t;
            } else {
                i = t * params.n_in + j;
            }
            let w = weight(i);
            for (var r = 0u; r < R; r++) {
                if (r < rows) {
                    acc[r] = acc[r] + a[(r0 + r) * t_len + t] * w;
                }
            }
        }
    }
    for (var r = 0u; r < R; r++) {
        partial[r * WG + tid] = acc[r];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (tid < s) {
            for (var r = 0u; r < R; r++) {
                partial[r * WG + tid] = partial[r * WG + tid] + partial[r * WG + tid + s];
            }
        }
        workgroupBarrier();
    }
    if (tid < rows && j < params.j) {
        out[(r0 + tid) * params.j + j] = partial[tid * WG];
    }
}
