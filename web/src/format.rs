//! How figures are printed on the page: GiB, hours, data: URLs, the formula keys of the
//! breakdown's parts.

use lorafit_core::export;
use lorafit_core::plan::Settings;

pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub(crate) fn hours(secs: f64) -> String {
    if secs < 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// A `data:` URL for a download link (percent-encoded; no server involved).
pub(crate) fn data_url(mime: &str, text: &str) -> String {
    format!("data:{mime};charset=utf-8,{}", export::pct_encode(text))
}

/// The i18n key of the formula (in words) behind one breakdown part, shown on hover.
pub(crate) fn formula_key(part: &str) -> &'static str {
    match part {
        "weights" => "f_weights",
        "adapter" => "f_adapter",
        "gradients" => "f_gradients",
        "optimizer" => "f_optimizer",
        "activations" => "f_activations",
        "logits" => "f_logits",
        _ => "f_overhead",
    }
}

pub(crate) fn get_str(s: &Settings, k: &str) -> String {
    s.get(k).map(|v| v.to_string()).unwrap_or_default()
}
