//! The catalogs in `data/` are kept pretty-printed for review; the crate embeds them with the
//! whitespace outside strings removed (the web page carries them in its wasm, whose gzipped size
//! has a budget). For wasm the embedded copies also leave out what nothing on the page reads:
//! the config keys the parser ignores (`architectures`, `torch_dtype`, token ids, …; the CLI's
//! `random-model` writes them, so native builds keep them) and the LLaMA-Factory keys'
//! declaring class and default (the page checks a key's type and choices only; an empty
//! `choices` is left out too, as the field's default).

use std::path::Path;

fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

// `UNREAD_CONFIG_KEYS`: shared with the crate, whose tests check that leaving them out changes
// no catalog model's parse.
include!("src/unread_keys.rs");

fn strip_config(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(m) = v {
        for k in UNREAD_CONFIG_KEYS {
            m.remove(k);
        }
        for sub in m.values_mut() {
            if sub.is_object() {
                strip_config(sub);
            }
        }
    }
}

/// The wasm copy of a data file: what the page never reads left out.
fn for_wasm(name: &str, text: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).expect("data file is JSON");
    match name {
        "models.json" => {
            if let Some(serde_json::Value::Array(models)) = v.get_mut("models") {
                for m in models {
                    if let Some(c) = m.get_mut("config") {
                        strip_config(c);
                    }
                }
            }
        }
        "llamafactory_keys.json" => {
            for list in ["keys", "v1_keys"] {
                if let Some(serde_json::Value::Array(keys)) = v.get_mut(list) {
                    for k in keys.iter_mut().filter_map(|k| k.as_object_mut()) {
                        k.remove("group");
                        k.remove("default");
                        // An empty list is the field's default.
                        if k.get("choices")
                            .and_then(|c| c.as_array())
                            .is_some_and(|c| c.is_empty())
                        {
                            k.remove("choices");
                        }
                    }
                }
            }
        }
        _ => {}
    }
    serde_json::to_string(&v).expect("JSON")
}

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    println!("cargo::rerun-if-changed=src/unread_keys.rs");
    for name in ["models.json", "gpus.json", "llamafactory_keys.json"] {
        let src = Path::new("data").join(name);
        println!("cargo::rerun-if-changed={}", src.display());
        let text = std::fs::read_to_string(&src).expect("data file");
        let embedded = if wasm {
            for_wasm(name, &text)
        } else {
            minify(&text)
        };
        std::fs::write(Path::new(&out).join(name), embedded).expect("write OUT_DIR");
    }
}
