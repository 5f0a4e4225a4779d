// Fused 4-bit dequant-matmul for QLoRA (NF4 or FP4: the 16-entry code table is a binding).
// W is a bitsandbytes-layout 4-bit weight [n_out, n_in]; it is dequantized tile by tile into
// workgroup memory and never exists densely in device memory.
//   trans = 1 (forward):        out[m, j] = sum_t a[m, t] * W[j, t]   a: [M, n_in],  out: [M, n_out]
//   trans = 0 (input gradient): out[m, j] = sum_t a[m, t] * W[t, j]   a: [M, n_out], out: [M, n_in]
// W element i (row-major) = code[nibble(i)] * absmax[i / blocksize]; element 2j is the high nibble
// of byte j of `packed` (little-endian u32 words), element 2j + 1 its low nibble.
// Tiling: 64 x 64 outputs per workgroup of 16 x 16 invocations, 4 x 4 per invocation, 16-deep
// slices of a and W staged in workgroup memory. Every storage binding is read_write because
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
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TM][TK]
var<workgroup> tile_w: array<f32, 1024>; // [TK][TN]
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

    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    for (var t0 = 0u; t0 < t_len; t0 += TK) {
        // Stage a[row0.., t0..] (64 x 16).
        for (var s = 0u; s < 4u; s++) {
            let e = tid + s * 256u;
            let r = e / TK;
            let k = e % TK;
            let gr = row0 + r;
            let gt = t0 + k;
            var v = 0.0;
            if (gr < m && gt < t_len) {
                v = a[gr * t_len + gt];
            }
            tile_a[e] = v;
        }
        // Stage the W slice (16 x 64), dequantizing on the way in. Neighbouring invocations read
        // neighbouring elements of W in both modes.
        for (var s = 0u; s < 4u; s++) {
            let e = tid + s * 256u;
            var k: u32;
            var c: u32;
            if (params.trans == 1u) {
                k = e % TK;
                c = e / TK;
            } else {
                k = e / TN;
                c = e % TN;
            }
            let gt = t0 + k;
            let gc = col0 + c;
            var v = 0.0;
            if (gt < t_len && gc < jn) {
                if (params.trans == 1u) {
                    v = weight(gc * params.n_in + gt);
                } else {
                    v = weight(gt * params.n_in + gc);
                }
            }
            tile_w[k * TN + c] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            var av: array<f32, 4>;
            var wv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[(lid.y * 4u + i) * TK + k];
                wv[i] = tile_w[k * TN + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var q = 0u; q < 4u; q++) {
                    acc[i * 4u + q] = acc[i * 4u + q] + av[i] * wv[q];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        for (var q = 0u; q < 4u; q++) {
            let c = col0 + lid.x * 4u + q;
            if (r < m && c < jn) {
                out[r * jn + c] = acc[i * 4u + q];
            }
        }
    }
}
