//! The catalogs in `data/` are kept pretty-printed for review; the crate embeds them with the
//! whitespace outside strings removed (the web page carries them in its wasm, whose gzipped size
//! has a budget).

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

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in ["models.json", "gpus.json", "llamafactory_keys.json"] {
        let src = Path::new("data").join(name);
        println!("cargo::rerun-if-changed={}", src.display());
        let text = std::fs::read_to_string(&src).expect("data file");
        std::fs::write(Path::new(&out).join(name), minify(&text)).expect("write OUT_DIR");
    }
}
