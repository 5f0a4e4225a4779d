//! The WGSL kernels in shaders/: every file validates with naga, and the dequant kernels run on a
//! real wgpu adapter (Mesa lavapipe in CI) and equal lorafit-quant's CPU reference bit for bit on
//! the bitsandbytes fixtures. Skipped, with the reason printed, where no adapter exists.

use lorafit_quant::{Absmax, QuantType, Quantized4bit};
use safetensors::SafeTensors;
use wgpu::util::DeviceExt;

const FIXTURE: &[u8] = include_bytes!("fixtures/bnb_4bit.safetensors");
const NF4_DEQUANT: &str = include_str!("../../../shaders/nf4_dequant.wgsl");
const NESTED_ABSMAX: &str = include_str!("../../../shaders/nested_absmax.wgsl");

#[test]
fn every_shader_validates_with_naga() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let src = std::fs::read_to_string(&path).expect("read");
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "{n} shaders");
}

struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

fn gpu() -> Option<Gpu> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        match pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        {
            Ok(a) => a,
            Err(e) => {
                println!(
                    "skipped: no wgpu adapter ({e}); install mesa-vulkan-drivers for lavapipe"
                );
                return None;
            }
        };
    println!("wgpu adapter: {:?}", adapter.get_info());
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).ok()?;
    Some(Gpu { device, queue })
}

fn words(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    while !v.len().is_multiple_of(4) || v.is_empty() {
        v.push(0);
    }
    v
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Run a one-entry-point kernel with bindings 0..n (the last is the f32 output of `out_len`).
fn run(gpu: &Gpu, src: &str, inputs: &[Vec<u8>], out_len: usize, groups: (u32, u32)) -> Vec<f32> {
    let d = &gpu.device;
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let storage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let mut buffers: Vec<wgpu::Buffer> = inputs
        .iter()
        .map(|b| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: b,
                usage: storage,
            })
        })
        .collect();
    let out_bytes = (out_len.max(1) * 4) as u64;
    buffers.push(d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: out_bytes,
        usage: storage,
        mapped_at_creation: false,
    }));
    let readback = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: out_bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }
    enc.copy_buffer_to_buffer(buffers.last().expect("out"), 0, &readback, 0, out_bytes);
    gpu.queue.submit([enc.finish()]);
    let slice = readback.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    d.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let data = slice.get_mapped_range().expect("mapped");
    data.chunks_exact(4)
        .take(out_len)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Grid for `n` invocations of workgroup 64, ≤ 65535 groups per dimension.
fn grid(n: usize) -> ((u32, u32), u32) {
    let groups = n.div_ceil(64).max(1) as u32;
    let x = groups.min(65535);
    let y = groups.div_ceil(x);
    ((x, y), x * 64)
}

fn dequant_on_gpu(gpu: &Gpu, q: &Quantized4bit) -> Vec<f32> {
    let blocks = q.numel().div_ceil(q.blocksize);
    let absmax = match &q.absmax {
        Absmax::Plain(a) => a.clone(),
        Absmax::Nested {
            codes,
            nested_absmax,
            code,
            nested_blocksize,
            offset,
        } => {
            let mut params = Vec::new();
            params.extend((blocks as u32).to_le_bytes());
            params.extend((*nested_blocksize as u32).to_le_bytes());
            let ((x, y), row_stride) = grid(blocks);
            params.extend(offset.to_le_bytes());
            params.extend(row_stride.to_le_bytes());
            run(
                gpu,
                NESTED_ABSMAX,
                &[
                    words(codes),
                    f32_bytes(nested_absmax),
                    f32_bytes(code),
                    params,
                ],
                blocks,
                (x, y),
            )
        }
    };
    // One invocation per packed word (8 elements).
    let ((x, y), row_stride) = grid(q.numel().div_ceil(8));
    let mut params = Vec::new();
    for v in [q.numel() as u32, q.blocksize as u32, row_stride, 0] {
        params.extend(v.to_le_bytes());
    }
    run(
        gpu,
        NF4_DEQUANT,
        &[
            words(&q.packed),
            f32_bytes(&absmax),
            f32_bytes(q.quant_type.code()),
            params,
        ],
        q.numel(),
        (x, y),
    )
}

#[test]
fn dequant_kernels_equal_the_cpu_reference_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let st = SafeTensors::deserialize(FIXTURE).expect("fixture");
    let mut cases = 0;
    for name in [
        "64x64", "3x50", "7x33", "128x96", "1x1", "96x160", "special",
    ] {
        let t = st.tensor(&format!("{name}.input")).expect("input");
        let input: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            for dq in [false, true] {
                let q = Quantized4bit::quantize(&input, t.shape(), qt, 64, dq).expect("quantize");
                let cpu = q.dequantize().expect("cpu");
                let gpu_out = dequant_on_gpu(&gpu, &q);
                let differ = cpu
                    .iter()
                    .zip(&gpu_out)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differ,
                    0,
                    "{name} {qt:?} dq={dq}: {differ} of {} values differ",
                    cpu.len()
                );
                cases += 1;
            }
        }
    }
    // A tensor with more than 65535 × 64 elements exercises the 2-D grid.
    let big: Vec<f32> = (0..4_300_000).map(|i| ((i as f32) * 0.618).sin()).collect();
    let q = Quantized4bit::quantize(&big, &[big.len()], QuantType::Nf4, 64, true).expect("q");
    let cpu = q.dequantize().expect("cpu");
    let gpu_out = dequant_on_gpu(&gpu, &q);
    assert!(
        cpu.iter()
            .zip(&gpu_out)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "4.3M elements differ"
    );
    println!(
        "{} fixture cases + a 4.3M-element tensor bit-exact on the adapter",
        cases
    );
}
