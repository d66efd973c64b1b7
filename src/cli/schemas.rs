//! The config file's `schema` keys: a JSON schema per topic pattern, loaded from files.
//!
//! ```toml
//! [topics."sensors/+/temp"]
//! schema = "schemas/temp.json"   # relative to the config file
//! ```
//!
//! At start, a schema that cannot be read or compiled is an error naming the pattern, the
//! file and why. On a reload (`SIGHUP`) it keeps the schema that pattern had, and logs why:
//! a typo in a schema never turns validation off.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mote::engine::schemas::{SchemaPatterns, TopicSchema};
use mote::schema::{MAX_SCHEMA_BYTES, Schema};
use mote_sdk::Filter;

use super::args::CliError;

/// The schemas the `[topics]` section names. `config`: the config file, whose directory
/// relative paths start from. `old`: on a reload, the schemas in force, kept for a
/// pattern whose new schema fails to load.
pub(crate) fn schemas(
    section: Option<&toml::Value>,
    config: Option<&str>,
    old: Option<&SchemaPatterns>,
) -> Result<SchemaPatterns, CliError> {
    let mut out = Vec::new();
    // `topics::topics` has checked the shape of the section and each pattern.
    let tables = section
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten();
    for (pattern, table) in tables {
        let Some(file) = table.get("schema").and_then(toml::Value::as_str) else {
            continue;
        };
        let filter = Filter::new(pattern)
            .map_err(|e| CliError(format!("[topics.{pattern:?}]: not a topic pattern: {e}")))?;
        let path = resolve(config, file);
        match load(&path) {
            Ok(schema) => {
                let s = TopicSchema {
                    pattern: pattern.as_str().into(),
                    file: file.into(),
                    schema,
                };
                out.push((filter, Arc::new(s)));
            }
            Err(why) => {
                let what = format!(
                    "[topics.{pattern:?}] schema {file:?} ({}): {why}",
                    path.display()
                );
                let Some(old) = old else {
                    return Err(CliError(what));
                };
                match old.iter().find(|s| *s.pattern == **pattern) {
                    Some(s) => {
                        log::error!(
                            "reload: {what}; keeping the schema loaded before (from {:?})",
                            &*s.file
                        );
                        out.push((filter, Arc::clone(s)));
                    }
                    None => log::error!(
                        "reload: {what}; the pattern had no schema and has none until this one loads"
                    ),
                }
            }
        }
    }
    SchemaPatterns::new(out).map_err(|e| CliError(format!("[topics]: {e}")))
}

/// `file` relative to the config file's directory (absolute paths stay as they are).
fn resolve(config: Option<&str>, file: &str) -> PathBuf {
    let dir = config
        .and_then(|c| Path::new(c).parent())
        .unwrap_or(Path::new(""));
    dir.join(file)
}

fn load(path: &Path) -> Result<Schema, String> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCHEMA_BYTES as u64 + 1).read_to_end(&mut text))
        .map_err(|e| format!("cannot read it: {e}"))?;
    Schema::from_slice(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn section(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        assert_eq!(
            resolve(Some("/etc/mote/mote.toml"), "schemas/t.json"),
            Path::new("/etc/mote/schemas/t.json")
        );
        assert_eq!(resolve(Some("mote.toml"), "t.json"), Path::new("t.json"));
        assert_eq!(
            resolve(Some("/etc/mote/mote.toml"), "/srv/t.json"),
            Path::new("/srv/t.json")
        );
    }

    #[test]
    fn a_broken_schema_fails_at_start_and_keeps_the_old_one_on_reload() {
        let dir = std::env::temp_dir().join(format!("mote-schemas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("mote.toml");
        let config = config.to_str().unwrap();
        std::fs::write(dir.join("t.json"), r#"{"type": "number"}"#).unwrap();
        let t = section(
            r#"
            [topics."a/+"]
            schema = "t.json"
            [topics."b"]
            persist = false
            "#,
        );
        let ok = schemas(t.get("topics"), Some(config), None).unwrap();
        assert_eq!(ok.len(), 1);
        let s = ok.resolve("a/x").unwrap();
        assert_eq!((&*s.pattern, &*s.file), ("a/+", "t.json"));
        assert!(s.schema.check(b"1").is_ok());
        assert!(ok.resolve("b").is_none());

        std::fs::write(dir.join("t.json"), r#"{"type": "number", "oneOf": []}"#).unwrap();
        let e = schemas(t.get("topics"), Some(config), None).unwrap_err();
        assert_eq!(
            e.0,
            format!(
                "[topics.\"a/+\"] schema \"t.json\" ({}): /: keyword \"oneOf\" is not supported (mote supports {}; see docs/schemas.md)",
                dir.join("t.json").display(),
                mote::schema::SUPPORTED.join(", ")
            )
        );
        let kept = schemas(t.get("topics"), Some(config), Some(&ok)).unwrap();
        assert!(Arc::ptr_eq(
            &kept.resolve("a/x").unwrap(),
            &ok.resolve("a/x").unwrap()
        ));
        std::fs::remove_file(dir.join("t.json")).unwrap();
        let e = schemas(t.get("topics"), Some(config), None).unwrap_err();
        assert!(e.0.contains("cannot read it"), "{}", e.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
