//! Checking a value against compiled [`Node`]s: the first failing location and rule.
//!
//! Nothing is allocated unless the value fails: the location is a chain of borrowed
//! segments on the stack, written out only for the error.

use core::cmp::Ordering;

use serde_json::{Number, Value};

use super::compile::{ARRAY, BOOLEAN, INTEGER, NULL, NUMBER, Node, OBJECT, STRING, TYPE_NAMES};
use super::{Invalid, push_token};

/// Where in the payload a value is.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut p = self;
        loop {
            match p {
                Path::Root => break,
                Path::Key(up, k) => {
                    segments.push(Err(*k));
                    p = up;
                }
                Path::Index(up, i) => {
                    segments.push(Ok(*i));
                    p = up;
                }
            }
        }
        if segments.is_empty() {
            return "/".into();
        }
        let mut out = String::new();
        for s in segments.iter().rev() {
            match s {
                Ok(i) => {
                    out.push('/');
                    out.push_str(&i.to_string());
                }
                Err(k) => push_token(&mut out, k),
            }
        }
        out
    }
}

struct Checker<'a> {
    nodes: &'a [Node],
    steps: u64,
    budget: u64,
}

/// Checks `value` against node 0, giving up after `budget` (value, subschema) visits.
pub(super) fn validate(nodes: &[Node], value: &Value, budget: u64) -> Result<(), Invalid> {
    let mut c = Checker {
        nodes,
        steps: 0,
        budget,
    };
    c.check(0, value, &Path::Root)
}

fn fail(path: &Path<'_>, rule: String) -> Result<(), Invalid> {
    Err(Invalid {
        path: path.render(),
        rule,
    })
}

impl Checker<'_> {
    /// Checks `value` against node `start` and the `$ref` chain from it (a loop: chains
    /// are bounded and acyclic, checked at load).
    fn check(&mut self, start: usize, value: &Value, path: &Path<'_>) -> Result<(), Invalid> {
        let mut at = Some(start);
        while let Some(i) = at {
            self.steps += 1;
            if self.steps > self.budget {
                return fail(
                    path,
                    format!(
                        "the schema applies more than {} subschemas to this payload; it was refused unchecked (simplify the schema)",
                        self.budget
                    ),
                );
            }
            let node = &self.nodes[i];
            self.rules(node, value, path)?;
            at = node.reference;
        }
        Ok(())
    }

    fn rules(&mut self, n: &Node, value: &Value, path: &Path<'_>) -> Result<(), Invalid> {
        if n.never {
            return fail(
                path,
                "no value is allowed here (the schema is false)".into(),
            );
        }
        if n.types != 0 && n.types & type_of(value) == 0 {
            return fail(
                path,
                format!("expected {}, got {}", type_names(n.types), name_of(value)),
            );
        }
        if let Some(c) = &n.constant {
            if !json_eq(c, value) {
                return fail(path, format!("must be {}", shown(c)));
            }
        }
        if let Some(values) = &n.enumeration {
            if !values.iter().any(|v| json_eq(v, value)) {
                return fail(path, format!("must be one of {}", listed(values)));
            }
        }
        match value {
            Value::Number(x) => numeric(n, x, path),
            Value::String(s) => string(n, s, path),
            Value::Array(items) => self.array(n, items, path),
            Value::Object(members) => self.object(n, members, path),
            Value::Null | Value::Bool(_) => Ok(()),
        }
    }

    fn array(&mut self, n: &Node, items: &[Value], path: &Path<'_>) -> Result<(), Invalid> {
        let len = items.len() as u64;
        if let Some(min) = n.min_items.filter(|&m| len < m) {
            return fail(
                path,
                format!("array of {len} items is shorter than minItems {min}"),
            );
        }
        if let Some(max) = n.max_items.filter(|&m| len > m) {
            return fail(
                path,
                format!("array of {len} items is longer than maxItems {max}"),
            );
        }
        if let Some(schema) = n.items {
            for (i, item) in items.iter().enumerate() {
                self.check(schema, item, &Path::Index(path, i))?;
            }
        }
        Ok(())
    }

    fn object(
        &mut self,
        n: &Node,
        members: &serde_json::Map<String, Value>,
        path: &Path<'_>,
    ) -> Result<(), Invalid> {
        for name in &n.required {
            if !members.contains_key(&**name) {
                return fail(path, format!("missing required property {name:?}"));
            }
        }
        if n.properties.is_empty() && n.additional.is_none() {
            return Ok(());
        }
        for (name, value) in members {
            let schema = match n
                .properties
                .binary_search_by(|(p, _)| (**p).cmp(name.as_str()))
            {
                Ok(i) => n.properties[i].1,
                Err(_) => match n.additional {
                    Some(a) if self.nodes[a].never && self.nodes[a].reference.is_none() => {
                        return fail(
                            path,
                            format!(
                                "property {name:?} is not allowed (additionalProperties is false)"
                            ),
                        );
                    }
                    Some(a) => a,
                    None => continue,
                },
            };
            self.check(schema, value, &Path::Key(path, name))?;
        }
        Ok(())
    }
}

fn numeric(n: &Node, x: &Number, path: &Path<'_>) -> Result<(), Invalid> {
    fn outside<'b>(x: &Number, bound: &'b Option<Number>, ok: &[Ordering]) -> Option<&'b Number> {
        bound
            .as_ref()
            .filter(|b| !compare(x, b).is_some_and(|o| ok.contains(&o)))
    }
    let below = |bound, ok| outside(x, bound, ok);
    if let Some(b) = below(&n.minimum, &[Ordering::Greater, Ordering::Equal]) {
        return fail(path, format!("{x} is less than the minimum {b}"));
    }
    if let Some(b) = below(&n.maximum, &[Ordering::Less, Ordering::Equal]) {
        return fail(path, format!("{x} is greater than the maximum {b}"));
    }
    if let Some(b) = below(&n.exclusive_minimum, &[Ordering::Greater]) {
        return fail(
            path,
            format!("{x} is not greater than the exclusive minimum {b}"),
        );
    }
    if let Some(b) = below(&n.exclusive_maximum, &[Ordering::Less]) {
        return fail(
            path,
            format!("{x} is not less than the exclusive maximum {b}"),
        );
    }
    Ok(())
}

fn string(n: &Node, s: &str, path: &Path<'_>) -> Result<(), Invalid> {
    if n.min_length.is_some() || n.max_length.is_some() {
        // In characters (Unicode code points), as JSON Schema counts.
        let len = s.chars().count() as u64;
        if let Some(min) = n.min_length.filter(|&m| len < m) {
            return fail(
                path,
                format!("string of {len} characters is shorter than minLength {min}"),
            );
        }
        if let Some(max) = n.max_length.filter(|&m| len > m) {
            return fail(
                path,
                format!("string of {len} characters is longer than maxLength {max}"),
            );
        }
    }
    if let Some((text, re)) = &n.pattern {
        if !re.is_match(s) {
            return fail(
                path,
                format!(
                    "{} does not match the pattern {text:?}",
                    shown(&Value::String(s.into()))
                ),
            );
        }
    }
    Ok(())
}

fn type_of(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(n) if is_integer(n) => NUMBER | INTEGER,
        Value::Number(_) => NUMBER,
    }
}

fn name_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
    }
}

fn type_names(bits: u8) -> String {
    let names: Vec<&str> = TYPE_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|&(_, n)| n)
        .collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn is_integer(n: &Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

/// Numbers by value: exactly for integers, as floating point otherwise.
fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// JSON equality: numbers by value (`1` equals `1.0`), objects whatever their order.
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A value in a message, cut short when long.
fn shown(v: &Value) -> String {
    const MAX: usize = 60;
    let s = v.to_string();
    if s.chars().count() <= MAX {
        return s;
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}...")
}

fn listed(values: &[Value]) -> String {
    const MAX: usize = 8;
    let mut out: Vec<String> = values.iter().take(MAX).map(shown).collect();
    if values.len() > MAX {
        out.push(format!("... ({} in all)", values.len()));
    }
    out.join(", ")
}
