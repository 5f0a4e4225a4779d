// Dequantize bitsandbytes-layout 4-bit weights (NF4 or FP4: the 16-entry code table is a binding).
// One invocation per packed u32 word, i.e. 8 output elements i:  out[i] = code[nibble(i)] * absmax[i / blocksize]
// (blocksize is a multiple of 8, so the 8 elements of a word share one scale).
// `packed` holds the bytes of the packed weight as little-endian u32 words; element 2j is the high
// nibble of byte j, element 2j + 1 the low nibble. Every storage binding is read_write because
// cubecl may alias small buffers when this runs as a burn custom kernel.

struct Params {
    numel: u32,
    blocksize: u32,
    // Invocations per row of the dispatch grid (x workgroups × 64), for grids wider than 65535.
    row_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> packed: array<u32>;
@group(0) @binding(1) var<storage, read_write> absmax: array<f32>;
@group(0) @binding(2) var<storage, read_write> code: array<f32, 16>;
@group(0) @binding(3) var<storage, read_write> params: Params;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.y * params.row_stride + gid.x;
    let first = w * 8u;
    if (first >= params.numel) {
        return;
    }
    let word = packed[w];
    let scale = absmax[first / params.blocksize];
    for (var k = 0u; k < 8u; k++) {
        let i = first + k;
        if (i < params.numel) {
            // Element 2j is the high nibble of byte j, element 2j + 1 its low nibble.
            let shift = 8u * (k / 2u) + 4u * (1u - (k % 2u));
            out[i] = code[(word >> shift) & 0xfu] * scale;
        }
    }
}
