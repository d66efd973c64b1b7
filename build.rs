//! Embeds the OpenAPI document without its indentation: the checked-in file stays easy to
//! read and review, the binary carries 44 KB less.

use std::{env, fs, path::Path};

fn main() {
    let src = "src/http/openapi.json";
    println!("cargo::rerun-if-changed={src}");
    let pretty = fs::read_to_string(src).expect("src/http/openapi.json is readable");
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("openapi.json");
    fs::write(out, compact(&pretty)).expect("OUT_DIR is writable");
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
