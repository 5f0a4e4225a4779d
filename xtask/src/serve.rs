//! The local page server (`cargo xtask serve`, and what bench-web, Lighthouse and the e2e checks
//! load from): tiny_http, gzip by flate2 when the browser accepts it, ETag revalidation.

use anyhow::{Context, Result};

pub(crate) fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Serve `dir` on 127.0.0.1:`port` (static files only).
pub fn serve_dir(dir: std::path::PathBuf, port: u16) -> Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on port {port}"))?;
    println!(
        "lorafit page: http://127.0.0.1:{}/",
        listener.local_addr()?.port()
    );
    serve_on(listener, dir);
    Ok(())
}

/// One file as served: its bytes, gzipped bytes when compressing pays, and an ETag.
struct Served {
    body: Vec<u8>,
    gzip: Option<Vec<u8>>,
    etag: String,
    content_type: &'static str,
}

fn load_served(file: &std::path::Path) -> Option<Served> {
    use std::hash::{Hash, Hasher};
    use std::io::Write;
    let body = std::fs::read(file).ok()?;
    let content_type = content_type(file);
    let compressible = content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/javascript" | "application/wasm" | "application/json" | "image/svg+xml"
        );
    let gzip = compressible
        .then(|| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&body).ok()?;
            e.finish().ok()
        })
        .flatten()
        .filter(|g| g.len() < body.len());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    Some(Served {
        etag: format!("\"{:016x}-{}\"", h.finish(), body.len()),
        body,
        gzip,
        content_type,
    })
}

/// Serve `dir`'s static files with tiny_http: gzip when the browser accepts it (`Vary:
/// Accept-Encoding`), an ETag with `Cache-Control: no-cache` (the file names carry no hash, so a
/// browser revalidates and gets 304 when nothing changed), 404 for anything else.
pub fn serve_on(listener: std::net::TcpListener, dir: std::path::PathBuf) {
    let server = match tiny_http::Server::from_listener(listener, None) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("cannot serve {}: {e}", dir.display());
            return;
        }
    };
    let cache: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Served>>>,
    > = Default::default();
    let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (server, cache, dir) = (server.clone(), cache.clone(), dir.clone());
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    let path = req.url().split('?').next().unwrap_or("/").to_string();
                    let rel = if path == "/" {
                        "index.html".to_string()
                    } else {
                        path.trim_start_matches('/').to_string()
                    };
                    let file = dir.join(&rel);
                    let served = if rel.contains("..") || !file.is_file() {
                        None
                    } else {
                        let hit = cache.lock().ok().and_then(|c| c.get(&rel).cloned());
                        hit.or_else(|| {
                            let s = std::sync::Arc::new(load_served(&file)?);
                            if let Ok(mut c) = cache.lock() {
                                c.insert(rel.clone(), s.clone());
                            }
                            Some(s)
                        })
                    };
                    let Some(s) = served else {
                        let _ = req.respond(
                            tiny_http::Response::from_string("not found").with_status_code(404),
                        );
                        continue;
                    };
                    let has = |name: &str, needle: &str| {
                        req.headers().iter().any(|h| {
                            h.field.as_str().as_str().eq_ignore_ascii_case(name)
                                && h.value.as_str().contains(needle)
                        })
                    };
                    let mut headers: Vec<tiny_http::Header> = [
                        header("Content-Type", s.content_type),
                        header("ETag", &s.etag),
                        header("Cache-Control", "no-cache"),
                        header("Vary", "Accept-Encoding"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    if has("If-None-Match", &s.etag) {
                        let mut r = tiny_http::Response::empty(304);
                        for h in headers {
                            r.add_header(h);
                        }
                        let _ = req.respond(r);
                        continue;
                    }
                    let body = match &s.gzip {
                        Some(g) if has("Accept-Encoding", "gzip") => {
                            headers.extend(header("Content-Encoding", "gzip"));
                            g.clone()
                        }
                        _ => s.body.clone(),
                    };
                    let mut r = tiny_http::Response::from_data(body);
                    for h in headers {
                        r.add_header(h);
                    }
                    let _ = req.respond(r);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    fn get(port: u16, path: &str, extra: &str) -> (String, Vec<u8>) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
        )
        .expect("send");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("read");
        let split = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers end");
        (
            String::from_utf8_lossy(&all[..split]).to_ascii_lowercase(),
            all[split + 4..].to_vec(),
        )
    }

    /// The page server compresses what the browser accepts, revalidates by ETag and 404s the rest.
    #[test]
    fn page_server_gzips_revalidates_and_refuses() {
        let dir = std::env::temp_dir().join(format!("lorafit-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let js = "export function f() { return 1; }\n".repeat(200);
        std::fs::write(dir.join("index.html"), "<!doctype html><title>t</title>").expect("w");
        std::fs::write(dir.join("app.js"), &js).expect("w");
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let d = dir.clone();
        std::thread::spawn(move || super::serve_on(listener, d));
        let (head, body) = get(port, "/app.js", "Accept-Encoding: gzip, br\r\n");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-encoding: gzip"), "{head}");
        assert!(head.contains("cache-control: no-cache") && head.contains("vary: accept-encoding"));
        assert!(body.len() < js.len() / 10, "{} bytes gzipped", body.len());
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut plain)
            .expect("gunzip");
        assert_eq!(plain, js);
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .expect("etag")
            .to_string();
        let (head, _) = get(port, "/app.js", "");
        assert!(
            !head.contains("content-encoding"),
            "no gzip unless asked: {head}"
        );
        let (head, body) = get(port, "/app.js", &format!("If-None-Match: {etag}\r\n"));
        assert!(
            head.starts_with("http/1.1 304") && body.is_empty(),
            "{head}"
        );
        let (head, body) = get(port, "/", "");
        assert!(head.contains("content-type: text/html") && body.starts_with(b"<!doctype"));
        for p in ["/missing.js", "/../Cargo.toml"] {
            assert!(get(port, p, "").0.starts_with("http/1.1 404"), "{p}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
