//! Embeds the status page and the OpenAPI document deflated (zlib format, RFC 1950, which
//! is HTTP's `deflate` coding): the binary carries them compressed (187 KB of files, 140 KB
//! of it the OpenAPI document without its indentation, in 30 KB). The HTTP edge sends one
//! as it is stored to a client that accepts `deflate`, and inflates it for any other
//! (src/http/routes.rs). The checked-in files stay easy to read and review.
//!
//! It is mote-core's build script (src/Cargo.toml), so paths are taken from the repository's
//! root, one level above that package.

use std::{env, fs, path::Path};

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("..");
    let files = [
        ("src/http/openapi.json", "openapi.json.deflate"),
        ("web/index.html", "index.html.deflate"),
        ("web/app.js", "app.js.deflate"),
        ("web/style.css", "style.css.deflate"),
    ];
    for (src, name) in files {
        let path = root.join(src);
        println!("cargo::rerun-if-changed={}", path.display());
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{src}: {e}"));
        let text = if src.ends_with(".json") {
            compact(&text)
        } else {
            text
        };
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(text.as_bytes(), 10);
        fs::write(Path::new(&out).join(name), deflated).expect("OUT_DIR is writable");
    }
}

/// JSON without the whitespace between tokens; strings (escapes included) are kept as
/// they are.
fn compact(json: &str) -> String {
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
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}
