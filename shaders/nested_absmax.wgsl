// Undo bitsandbytes' double quantization of the 4-bit scales:
//   absmax[b] = nested_code[codes[b]] * nested_absmax[b / nested_blocksize] + offset
// `codes` holds the uint8 codes as little-endian u32 words. Every storage binding is read_write
// (cubecl may alias small buffers).

struct Params {
    blocks: u32,
    nested_blocksize: u32,
    offset: f32,
    // Invocations per row of the dispatch grid (x workgroups × 64), for grids wider than 65535.
    row_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> codes: array<u32>;
@group(0) @binding(1) var<storage, read_write> nested_absmax: array<f32>;
@group(0) @binding(2) var<storage, read_write> nested_code: array<f32, 256>;
@group(0) @binding(3) var<storage, read_write> params: Params;
@group(0) @binding(4) var<storage, read_write> absmax: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.y * params.row_stride + gid.x;
    if (b >= params.blocks) {
        return;
    }
    let c = (codes[b / 4u] >> (8u * (b % 4u))) & 0xffu;
    absmax[b] = nested_code[c] * nested_absmax[b / params.nested_blocksize] + params.offset;
}
