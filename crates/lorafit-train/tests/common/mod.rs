//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use lorafit_train::config::Backend;
use lorafit_train::make_device;

/// A fresh scratch directory for this process.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafit-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A wgpu adapter (lavapipe on CI), or a printed reason to skip.
pub fn wgpu_available() -> bool {
    if cfg!(not(feature = "wgpu")) {
        eprintln!("skipped: built without the wgpu feature");
        return false;
    }
    let ok = std::panic::catch_unwind(|| {
        let device = make_device(Backend::Wgpu, false).expect("device");
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar::<f32>()
    });
    match ok {
        Ok(3.0) => true,
        _ => {
            eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
            false
        }
    }
}
