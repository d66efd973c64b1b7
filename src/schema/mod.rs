//! Per-topic JSON schemas: a compact JSON Schema validator over [`serde_json::Value`].
//!
//! A [`Schema`] is compiled once, when the config file is loaded, into its own
//! representation (regular expressions compiled then too); [`Schema::check`] validates a
//! payload against it. It supports exactly the subset of JSON Schema (draft 2020-12) that
//! describes the documents sensors and services publish; the list is in
//! `docs/schemas.md` and in [`SUPPORTED`] and [`ANNOTATIONS`]. A schema that uses any
//! other keyword is refused when it is loaded, naming the keyword and where it is, never
//! ignored silently:
//!
//! ```
//! # extern crate mote_core as mote; // the `mote` package re-exports it
//! use mote::schema::Schema;
//!
//! let schema = Schema::from_slice(br#"{
//!     "type": "object",
//!     "required": ["value"],
//!     "properties": { "value": { "type": "number" } }
//! }"#).unwrap();
//! assert!(schema.check(br#"{"value": 21.5}"#).is_ok());
//! let e = schema.check(br#"{"value": "warm"}"#).unwrap_err();
//! assert_eq!(e.to_string(), "/value: expected number, got string");
//! let e = schema.check(b"{}").unwrap_err();
//! assert_eq!(e.to_string(), "/: missing required property \"value\"");
//!
//! let e = Schema::from_slice(br#"{"properties": {"x": {"oneOf": []}}}"#).unwrap_err();
//! assert!(e.to_string().starts_with("/properties/x: keyword \"oneOf\" is not supported"));
//! ```
//!
//! # Bounds
//!
//! - A schema file is at most [`MAX_SCHEMA_BYTES`]; its nesting, like a payload's, is
//!   bounded by serde_json's recursion limit (128 levels), and so is the validator's
//!   recursion, which descends one level of the payload per call.
//! - A `$ref` chain (a `$ref` to a schema that is itself a `$ref` ...) is followed in a
//!   loop, not recursively; a chain that comes back to itself without descending into the
//!   payload would never end and is refused at load time, as is one longer than
//!   [`MAX_REF_CHAIN`].
//! - The cost of a check is the number of (payload value, subschema) pairs visited, plus
//!   the regular expressions (`regex-lite` matches in time linear in the text) and
//!   `enum`/`const` comparisons (linear in the values). For ordinary schemas that is one
//!   visit per value of the payload; a schema that applies many subschemas to the same
//!   values (through `$ref` next to `properties`) multiplies it, so a check stops after
//!   [`MAX_STEPS`] visits (or [`STEPS_PER_BYTE`] per payload byte, if more) and refuses the
//!   payload, saying so.

mod compile;
mod validate;

#[cfg(test)]
mod tests;

use core::fmt;

use serde_json::Value;

/// The largest schema file accepted.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// The longest chain of `$ref`s to `$ref`s accepted.
pub const MAX_REF_CHAIN: usize = 32;

/// The most (payload value, subschema) visits one check makes before it gives up, or
/// [`STEPS_PER_BYTE`] per byte of the payload if that is more: a payload holds at most
/// one value per byte, so an ordinary schema never comes near it, whatever `--max-payload`.
pub const MAX_STEPS: u64 = 1 << 20;

/// See [`MAX_STEPS`].
pub const STEPS_PER_BYTE: u64 = 8;

/// The keywords that validate.
pub const SUPPORTED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "$ref",
    "$defs",
    "definitions",
];

/// The keywords accepted and ignored: they only annotate (`$id` only at the root, where it
/// changes nothing a `#/...` reference resolves to).
pub const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// A compiled schema, ready to check payloads. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<compile::Node>,
}

/// Why a schema could not be loaded: the location in the schema (a JSON Pointer, `/` for
/// the root) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Where in the schema.
    pub at: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

impl core::error::Error for LoadError {}

/// Why a payload does not match: the first failing location in the payload (a JSON
/// Pointer, `/` for the whole document) and the rule it breaks. Its `Display` is the
/// message a publisher gets: `/value: expected number, got string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Where in the payload; empty when the payload is not JSON at all.
    pub path: String,
    /// The rule it breaks.
    pub rule: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

impl core::error::Error for Invalid {}

impl Schema {
    /// Compiles the schema in `text` (JSON, at most [`MAX_SCHEMA_BYTES`]).
    pub fn from_slice(text: &[u8]) -> Result<Schema, LoadError> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(LoadError {
                at: String::new(),
                message: format!(
                    "the schema is {} bytes, the limit is {MAX_SCHEMA_BYTES}",
                    text.len()
                ),
            });
        }
        let value: Value = serde_json::from_slice(text).map_err(|e| LoadError {
            at: String::new(),
            message: format!("not JSON: {e}"),
        })?;
        Schema::compile(&value)
    }

    /// Compiles a schema already parsed.
    pub fn compile(schema: &Value) -> Result<Schema, LoadError> {
        compile::compile(schema).map(|nodes| Schema { nodes })
    }

    /// Checks a payload: it must be JSON and match.
    pub fn check(&self, payload: &[u8]) -> Result<(), Invalid> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| Invalid {
            path: String::new(),
            rule: format!("payload is not JSON: {e}"),
        })?;
        let budget = MAX_STEPS.max(STEPS_PER_BYTE.saturating_mul(payload.len() as u64));
        validate::validate(&self.nodes, &value, budget)
    }

    /// Checks a JSON value (within [`MAX_STEPS`]).
    pub fn validate(&self, value: &Value) -> Result<(), Invalid> {
        validate::validate(&self.nodes, value, MAX_STEPS)
    }
}

/// Appends a JSON Pointer token to `out`, escaped (`~` as `~0`, `/` as `~1`).
fn push_token(out: &mut String, token: &str) {
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}
