//! Loading: a schema document becomes a flat list of [`Node`]s, one per subschema, with
//! every keyword checked, every `$ref` resolved to a node and every `pattern` compiled.

use std::collections::HashMap;

use regex_lite::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};

use super::{ANNOTATIONS, LoadError, MAX_REF_CHAIN, SUPPORTED, push_token};

/// The most memory one `pattern` may compile to (regex-lite's own default is 10 MiB).
const MAX_REGEX_SIZE: usize = 256 << 10;

/// The JSON types, as bits of [`Node::types`].
pub(super) const NULL: u8 = 1;
pub(super) const BOOLEAN: u8 = 1 << 1;
pub(super) const OBJECT: u8 = 1 << 2;
pub(super) const ARRAY: u8 = 1 << 3;
pub(super) const NUMBER: u8 = 1 << 4;
pub(super) const STRING: u8 = 1 << 5;
/// Numbers with no fractional part (`1.0` is one: JSON Schema counts value, not spelling).
pub(super) const INTEGER: u8 = 1 << 6;

/// Type names in the order messages list them.
pub(super) const TYPE_NAMES: [(u8, &str); 7] = [
    (OBJECT, "object"),
    (ARRAY, "array"),
    (STRING, "string"),
    (NUMBER, "number"),
    (INTEGER, "integer"),
    (BOOLEAN, "boolean"),
    (NULL, "null"),
];

/// One subschema. `Node::default()` is the schema `true`: everything matches.
#[derive(Debug, Default)]
pub(super) struct Node {
    /// The schema `false`: nothing matches.
    pub(super) never: bool,
    /// Allowed types as bits; 0: any.
    pub(super) types: u8,
    /// Sorted by name, for a binary search per member of an object.
    pub(super) properties: Vec<(Box<str>, usize)>,
    pub(super) required: Vec<Box<str>>,
    pub(super) additional: Option<usize>,
    pub(super) items: Option<usize>,
    pub(super) enumeration: Option<Vec<Value>>,
    pub(super) constant: Option<Value>,
    pub(super) minimum: Option<Number>,
    pub(super) maximum: Option<Number>,
    pub(super) exclusive_minimum: Option<Number>,
    pub(super) exclusive_maximum: Option<Number>,
    pub(super) min_length: Option<u64>,
    pub(super) max_length: Option<u64>,
    pub(super) min_items: Option<u64>,
    pub(super) max_items: Option<u64>,
    pub(super) pattern: Option<(Box<str>, Regex)>,
    /// The node a `$ref` names, applied to the same value as this one.
    pub(super) reference: Option<usize>,
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    /// Where each node is in the document (a JSON Pointer), for messages.
    locations: Vec<String>,
    /// Nodes by location, so that a `$ref` to a subschema shares its node.
    by_location: HashMap<String, usize>,
    /// `$ref`s seen: (node, target as written, where).
    refs: Vec<(usize, String, String)>,
}

/// Compiles `root`; node 0 is the root.
pub(super) fn compile(root: &Value) -> Result<Vec<Node>, LoadError> {
    let mut c = Compiler {
        root,
        nodes: Vec::new(),
        locations: Vec::new(),
        by_location: HashMap::new(),
        refs: Vec::new(),
    };
    c.node(root, String::new())?;
    // Resolving a reference can compile a part of the document not reached otherwise,
    // with references of its own.
    let mut done = 0;
    while done < c.refs.len() {
        let (node, target, at) = c.refs[done].clone();
        let to = c.resolve(&target, &at)?;
        c.nodes[node].reference = Some(to);
        done += 1;
    }
    c.check_chains()?;
    Ok(c.nodes)
}

fn error(at: &str, message: String) -> LoadError {
    LoadError {
        at: if at.is_empty() { "/".into() } else { at.into() },
        message,
    }
}

impl Compiler<'_> {
    fn node(&mut self, v: &Value, at: String) -> Result<usize, LoadError> {
        if let Some(&i) = self.by_location.get(&at) {
            return Ok(i);
        }
        let i = self.nodes.len();
        self.nodes.push(Node::default());
        self.locations.push(at.clone());
        self.by_location.insert(at.clone(), i);
        let node = match v {
            Value::Bool(b) => Node {
                never: !b,
                ..Node::default()
            },
            Value::Object(m) => self.rules(m, &at, i)?,
            _ => {
                return Err(error(
                    &at,
                    "a schema must be an object or true or false".into(),
                ));
            }
        };
        self.nodes[i] = node;
        Ok(i)
    }

    fn rules(&mut self, m: &Map<String, Value>, at: &str, me: usize) -> Result<Node, LoadError> {
        let mut n = Node::default();
        for (key, v) in m {
            let err = |what: &str| error(at, format!("{key:?} {what}"));
            let sub = |kw: &str| {
                let mut s = at.to_string();
                push_token(&mut s, kw);
                s
            };
            match key.as_str() {
                "type" => n.types = types(v).map_err(|e| err(&e))?,
                "properties" => {
                    let Value::Object(props) = v else {
                        return Err(err("must be an object of schemas"));
                    };
                    let base = sub("properties");
                    for (name, s) in props {
                        let mut loc = base.clone();
                        push_token(&mut loc, name);
                        let i = self.node(s, loc)?;
                        n.properties.push((name.as_str().into(), i));
                    }
                    crate::sort::sort_by(&mut n.properties, |a, b| a.0.cmp(&b.0));
                }
                "required" => {
                    let Value::Array(names) = v else {
                        return Err(err("must be an array of property names"));
                    };
                    for name in names {
                        let Some(name) = name.as_str() else {
                            return Err(err("must be an array of property names (strings)"));
                        };
                        n.required.push(name.into());
                    }
                }
                "additionalProperties" => {
                    n.additional = Some(self.node(v, sub("additionalProperties"))?);
                }
                "items" => {
                    if v.is_array() {
                        return Err(err(
                            "must be one schema for every item; a schema per position (prefixItems) is not supported",
                        ));
                    }
                    n.items = Some(self.node(v, sub("items"))?);
                }
                "enum" => {
                    let Value::Array(values) = v else {
                        return Err(err("must be an array of the allowed values"));
                    };
                    n.enumeration = Some(values.clone());
                }
                "const" => n.constant = Some(v.clone()),
                "minimum" => n.minimum = Some(number(v).map_err(|e| err(&e))?),
                "maximum" => n.maximum = Some(number(v).map_err(|e| err(&e))?),
                "exclusiveMinimum" => {
                    n.exclusive_minimum = Some(number(v).map_err(|e| err(&e))?);
                }
                "exclusiveMaximum" => {
                    n.exclusive_maximum = Some(number(v).map_err(|e| err(&e))?);
                }
                "minLength" => n.min_length = Some(count(v).map_err(|e| err(&e))?),
                "maxLength" => n.max_length = Some(count(v).map_err(|e| err(&e))?),
                "minItems" => n.min_items = Some(count(v).map_err(|e| err(&e))?),
                "maxItems" => n.max_items = Some(count(v).map_err(|e| err(&e))?),
                "pattern" => {
                    let Some(p) = v.as_str() else {
                        return Err(err("must be a regular expression (a string)"));
                    };
                    let re = RegexBuilder::new(p)
                        .size_limit(MAX_REGEX_SIZE)
                        .build()
                        .map_err(|e| {
                            err(&format!(
                                "is not a regular expression regex-lite accepts: {}",
                                e.to_string().replace('\n', " ")
                            ))
                        })?;
                    n.pattern = Some((p.into(), re));
                }
                "$ref" => {
                    let Some(target) = v.as_str() else {
                        return Err(err("must be a string such as \"#/$defs/NAME\""));
                    };
                    self.refs.push((me, target.to_string(), at.to_string()));
                }
                "$defs" | "definitions" => {
                    let Value::Object(defs) = v else {
                        return Err(err("must be an object of schemas"));
                    };
                    let base = sub(key);
                    for (name, s) in defs {
                        let mut loc = base.clone();
                        push_token(&mut loc, name);
                        self.node(s, loc)?;
                    }
                }
                "$id" if !at.is_empty() => {
                    return Err(err(
                        "is only supported at the root (references are resolved within this file)",
                    ));
                }
                k if ANNOTATIONS.contains(&k) => {}
                _ => {
                    return Err(error(
                        at,
                        format!(
                            "keyword {key:?} is not supported (mote supports {}; see docs/schemas.md)",
                            SUPPORTED.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }

    /// The node a `$ref` written `target` at `at` names, compiled if it was not yet.
    fn resolve(&mut self, target: &str, at: &str) -> Result<usize, LoadError> {
        let refuse = || {
            error(
                at,
                format!(
                    "\"$ref\" {target:?} is not supported: only references within this file are, such as \"#/$defs/NAME\" (a JSON Pointer after #)"
                ),
            )
        };
        let Some(pointer) = target.strip_prefix('#') else {
            return Err(refuse());
        };
        let pointer = percent_decode(pointer).ok_or_else(refuse)?;
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(refuse());
        }
        let mut location = String::new();
        let mut v = self.root;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            let next = match v {
                Value::Object(m) => m.get(&token),
                Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            v = next.ok_or_else(|| {
                error(
                    at,
                    format!("\"$ref\" {target:?} names nothing in this schema"),
                )
            })?;
            push_token(&mut location, &token);
        }
        self.node(v, location)
    }

    /// Refuses a `$ref` chain that never ends (a cycle that does not descend into the
    /// payload) or is longer than [`MAX_REF_CHAIN`].
    fn check_chains(&self) -> Result<(), LoadError> {
        for start in 0..self.nodes.len() {
            let mut at = start;
            let mut steps = 0;
            while let Some(next) = self.nodes[at].reference {
                steps += 1;
                if next == start {
                    return Err(error(
                        &self.locations[start],
                        "\"$ref\" comes back to this schema without a value in between: it would never end".into(),
                    ));
                }
                if steps > MAX_REF_CHAIN {
                    return Err(error(
                        &self.locations[start],
                        format!(
                            "a chain of more than {MAX_REF_CHAIN} \"$ref\"s to \"$ref\"s starts here (or comes back to one of them)"
                        ),
                    ));
                }
                at = next;
            }
        }
        Ok(())
    }
}

fn types(v: &Value) -> Result<u8, String> {
    let one = |name: &Value| -> Result<u8, String> {
        let name = name.as_str().ok_or("must name types as strings")?;
        TYPE_NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|&(bit, _)| bit)
            .ok_or_else(|| {
                format!(
                    "names an unknown type {name:?} (object, array, string, number, integer, boolean, null)"
                )
            })
    };
    match v {
        Value::Array(names) if !names.is_empty() => {
            names.iter().try_fold(0, |bits, name| Ok(bits | one(name)?))
        }
        Value::Array(_) => Err("must name at least one type".into()),
        name => one(name),
    }
}

fn number(v: &Value) -> Result<Number, String> {
    match v {
        Value::Number(n) => Ok(n.clone()),
        _ => Err("must be a number".into()),
    }
}

fn count(v: &Value) -> Result<u64, String> {
    let bad = || "must be a whole number, 0 or more".to_string();
    let Value::Number(n) = v else {
        return Err(bad());
    };
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    // 2.0 is a whole number too.
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(f as u64),
        _ => Err(bad()),
    }
}

/// `%XX` escapes decoded (a fragment in a URI may carry them); `None` if the result is not
/// UTF-8 or an escape is broken.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
