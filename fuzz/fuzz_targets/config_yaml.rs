//! The YAML (v0 flat or v1 nested) / JSON config reader: any text is settings or an error, never
//! a panic; what parses exports to YAML that parses back to the same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorafit_core::{Settings, estimate, export};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = Settings::from_yaml(text) else {
        return;
    };
    let back = export::yaml_round_trip(&settings).expect("exported YAML parses");
    assert_eq!(
        export::to_llamafactory_yaml(&back, true),
        export::to_llamafactory_yaml(&settings, true)
    );
    if let Ok(plan) = settings.plan()
        && let Ok((arch, src)) = estimate::resolve_model(&plan, None)
    {
        let _ = estimate::estimate(&arch, src, &plan);
    }
});
