//! Device-memory measurements on wgpu (lavapipe on CI), in one test binary apart from the other
//! integration tests. burn's pool counters are per device and process, so each test holds
//! [`pool_lock`] while it measures: no other test allocates on the device meanwhile.

use std::sync::{Mutex, MutexGuard};

#[path = "../it/common/mod.rs"]
mod common;

mod fused;
mod model;
mod qlora_base;

/// The device's memory pool, one measuring test at a time.
fn pool_lock() -> MutexGuard<'static, ()> {
    static POOL: Mutex<()> = Mutex::new(());
    // A test that failed while holding the lock leaves nothing to protect.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}
