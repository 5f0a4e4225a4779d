// Fused 4-bit dequant-matmul for QLoRA (NF4 or FP4: the 16-entry code table is a binding).
// W is a bitsandbytes-layout 4-bit weight [n_out, n_in]; it is dequantized tile by tile into
// workgroup memory and never exists densely in device memory.
//   trans = 1 (forward):        out[m, j] = sum_t a[m, t] * W[j, t]   a: [M, n_in],  out: [M, n_out]
//   trans = 0 (input gradient): out[m, j] = sum_t a[m, t] * W[t, j]   a: [M, n_out], out: [M, n_in]
// W element i (row-major) = code[nibble(i)] * absmax[i / blocksize]; element 2j is the high nibble
// of byte j of `packed` (little-endian u32 words), element 2j + 1 its low nibble.
// Tiling: 64 x 64 outputs per workgroup of 16 x 16 invocations, 4 x 4 (one vec4 per row) per
// invocation, 32-deep slices of a (transposed) and of W (dequantized) staged in workgroup memory. Every storage binding is read_write because
// cubecl may alias small buffers when this runs as a burn custom kernel.

struct Params {
    m: u32,
    // Length of the summed dimension (n_in when trans = 1, n_out when trans = 0).
    t: u32,
    // Columns of the output (n_out when trans = 1, n_in when trans = 0).
    j: u32,
    // Row length of W (n_in).
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

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;

var<workgroup> tile_a: array<f32, 2048>; // [TK][TM]: a's slice, transposed
var<workgroup> tile_w: array<vec4<f32>, 512>; // [TK][TN / 4]
var<workgroup> shared_t: u32;

fn weight(i: u32) -> f32 {
    let word = packed[i / 8u];
    let byte_in_word = (i % 8u) / 2u;
    let shift = 8u * byte_in_word + 4u * (1u - (i % 2u));
    return code[(word >> shift) & 0xfu] * absmax[i / params.blocksize];
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let tid = lid.y * 16u + lid.x;
    if (tid == 0u) {
        shared_t = params.t;
    }
    // The loop bound must be uniform for the barriers inside it.
    let t_len = workgroupUniformLoad(&shared_t);
    let m = params.m;
    let jn = params.j;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    for (var t0 = 0u; t0 < t_len; t0 += TK) {
        // Stage a[row0.., t0..] (64 x 32), neighbouring invocations reading neighbouring t.
        for (var s = 0u; s < 8u; s++) {
            let e = tid + s * 256u;
            let r = e / TK;
            let k = e % TK;
            let gr = row0 + r;
            let gt = t0 + k;
            var v = 0.0;
            if (gr < m && gt < t_len) {
                v = a[gr * t_len + gt];
            }
            tile_a[k * TM + r] = v;
        }
        // Stage the W slice (32 x 64), dequantizing on the way in: each invocation fills four
        // neighbouring columns of two rows of the slice.
        for (var s = 0u; s < 2u; s++) {
            let k = tid / 16u + s * 16u;
            let c4 = tid % 16u;
            let gt = t0 + k;
            var v = vec4<f32>(0.0);
            if (gt < t_len) {
                for (var q = 0u; q < 4u; q++) {
                    let gc = col0 + c4 * 4u + q;
                    if (gc < jn) {
                        if (params.trans == 1u) {
                            v[q] = weight(gc * params.n_in + gt);
                        } else {
                            v[q] = weight(gt * params.n_in + gc);
                        }
                    }
                }
            }
            tile_w[k * 16u + c4] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let wv = tile_w[k * 16u + lid.x];
            let base = k * TM + lid.y * 4u;
            acc[0] = acc[0] + tile_a[base] * wv;
            acc[1] = acc[1] + tile_a[base + 1u] * wv;
            acc[2] = acc[2] + tile_a[base + 2u] * wv;
            acc[3] = acc[3] + tile_a[base + 3u] * wv;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        for (var q = 0u; q < 4u; q++) {
            let c = col0 + lid.x * 4u + q;
            if (r < m && c < jn) {
                out[r * jn + c] = acc[i][q];
            }
        }
    }
}
