//! The share-link decoder: any query string gives settings plus warnings, never a panic; the
//! settings it keeps survive a round trip through the encoder, and the estimate of them is an
//! answer or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorafit_core::{estimate, export};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let (settings, _warnings) = export::from_query(query);
    let again = export::from_query(&export::to_query(&settings)).0;
    assert_eq!(export::to_query(&again), export::to_query(&settings));
    if let Ok(plan) = settings.plan()
        && let Ok((arch, src)) = estimate::resolve_model(&plan, None)
    {
        let _ = estimate::estimate(&arch, src, &plan);
    }
});
