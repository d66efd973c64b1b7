//! The validator's own cases: messages, load-time refusals, bounds. The official
//! JSON-Schema-Test-Suite runs in `tests/schema_suite.rs`.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use serde_json::json;

use super::*;

fn schema(v: serde_json::Value) -> Schema {
    Schema::compile(&v).unwrap()
}

fn refused(v: serde_json::Value) -> String {
    Schema::compile(&v).unwrap_err().to_string()
}

fn why(s: &Schema, payload: &str) -> String {
    s.check(payload.as_bytes()).unwrap_err().to_string()
}

fn temp() -> Schema {
    schema(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "a temperature reading",
        "type": "object",
        "required": ["sensor", "value"],
        "additionalProperties": false,
        "properties": {
            "sensor": { "type": "string", "pattern": "^[a-z0-9-]+$", "maxLength": 32 },
            "value": { "type": "number", "minimum": -40, "maximum": 125 },
            "unit": { "enum": ["C", "F"] },
            "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 2 },
            "at": { "$ref": "#/$defs/time" }
        },
        "$defs": { "time": { "type": "integer", "exclusiveMinimum": 0 } }
    }))
}

#[test]
fn a_valid_document_passes() {
    let s = temp();
    assert_eq!(
        s.check(br#"{"sensor":"k1","value":21.5,"unit":"C","tags":["a"],"at":17}"#),
        Ok(())
    );
    assert_eq!(s.check(br#"{"sensor":"k1","value":-40}"#), Ok(()));
}

#[test]
fn messages_name_the_first_failing_path_and_rule() {
    let s = temp();
    let cases = [
        (
            r#"{"sensor":"k1","value":"warm"}"#,
            "/value: expected number, got string",
        ),
        (
            r#"{"sensor":"k1"}"#,
            "/: missing required property \"value\"",
        ),
        (
            r#"{"sensor":"k1","value":200}"#,
            "/value: 200 is greater than the maximum 125",
        ),
        (
            r#"{"sensor":"k1","value":-41.5}"#,
            "/value: -41.5 is less than the minimum -40",
        ),
        (
            r#"{"sensor":"K 1","value":1}"#,
            "/sensor: \"K 1\" does not match the pattern \"^[a-z0-9-]+$\"",
        ),
        (
            r#"{"sensor":"k1","value":1,"unit":"K"}"#,
            "/unit: must be one of \"C\", \"F\"",
        ),
        (
            r#"{"sensor":"k1","value":1,"tags":["a",3]}"#,
            "/tags/1: expected string, got number",
        ),
        (
            r#"{"sensor":"k1","value":1,"tags":["a","b","c"]}"#,
            "/tags: array of 3 items is longer than maxItems 2",
        ),
        (
            r#"{"sensor":"k1","value":1,"at":0}"#,
            "/at: 0 is not greater than the exclusive minimum 0",
        ),
        (
            r#"{"sensor":"k1","value":1,"at":1.5}"#,
            "/at: expected integer, got number",
        ),
        (
            r#"{"sensor":"k1","value":1,"extra":true}"#,
            "/: property \"extra\" is not allowed (additionalProperties is false)",
        ),
        ("[1]", "/: expected object, got array"),
    ];
    for (payload, want) in cases {
        assert_eq!(why(&s, payload), want, "{payload}");
    }
}

#[test]
fn a_payload_that_is_not_json_says_so() {
    let s = temp();
    assert_eq!(
        why(&s, "21.5 C"),
        "payload is not JSON: trailing characters at line 1 column 6"
    );
    assert!(why(&s, "").starts_with("payload is not JSON: EOF"));
    assert!(s.check(&[0xff, 0xfe]).is_err());
}

#[test]
fn paths_are_json_pointers() {
    let s = schema(json!({
        "properties": { "a/b": { "properties": { "m~n": { "type": "null" } } } }
    }));
    assert_eq!(
        why(&s, r#"{"a/b":{"m~n":1}}"#),
        "/a~1b/m~0n: expected null, got number"
    );
}

#[test]
fn several_types_and_integers_by_value() {
    let s = schema(json!({ "type": ["string", "null"] }));
    assert_eq!(why(&s, "1"), "/: expected string or null, got number");
    let s = schema(json!({ "type": "integer" }));
    assert_eq!(s.check(b"1.0"), Ok(()));
    assert_eq!(s.check(b"-9223372036854775808"), Ok(()));
    assert_eq!(s.check(b"18446744073709551615"), Ok(()));
    assert!(s.check(b"1.5").is_err());
}

#[test]
fn lengths_count_code_points() {
    let s = schema(json!({ "minLength": 2, "maxLength": 3 }));
    assert_eq!(s.check("\"é€\"".as_bytes()), Ok(()));
    assert_eq!(s.check("\"💩💩💩\"".as_bytes()), Ok(()));
    assert_eq!(
        why(&s, "\"💩\""),
        "/: string of 1 characters is shorter than minLength 2"
    );
    assert_eq!(
        why(&s, "\"abcd\""),
        "/: string of 4 characters is longer than maxLength 3"
    );
    // Other types are not strings: no length applies.
    assert_eq!(s.check(b"1"), Ok(()));
}

#[test]
fn const_and_enum_compare_numbers_by_value() {
    let s = schema(json!({ "const": { "a": [1, 2.0] } }));
    assert_eq!(s.check(br#"{"a":[1.0,2]}"#), Ok(()));
    assert_eq!(why(&s, r#"{"a":[1,3]}"#), "/: must be {\"a\":[1,2.0]}");
    let s = schema(json!({ "enum": [false, 0] }));
    assert_eq!(s.check(b"0.0"), Ok(()));
    assert_eq!(why(&s, "null"), "/: must be one of false, 0");
    let many: Vec<i32> = (0..20).collect();
    let s = schema(json!({ "enum": many }));
    assert_eq!(
        why(&s, "99"),
        "/: must be one of 0, 1, 2, 3, 4, 5, 6, 7, ... (20 in all)"
    );
}

#[test]
fn recursive_references_descend_into_the_payload() {
    let s = schema(json!({
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": { "children": { "items": { "$ref": "#/$defs/node" } } }
            }
        }
    }));
    assert_eq!(s.check(br#"{"children":[{"children":[{}]}]}"#), Ok(()));
    assert_eq!(
        why(&s, r#"{"children":[{"children":[3]}]}"#),
        "/children/0/children/0: expected object, got number"
    );
    let root = schema(json!({ "properties": { "next": { "$ref": "#" } }, "required": ["v"] }));
    assert_eq!(
        why(&root, r#"{"v":1,"next":{"v":2,"next":{}}}"#),
        "/next/next: missing required property \"v\""
    );
    // draft-07's name for $defs, and a pointer with escapes.
    let s = schema(json!({
        "definitions": { "a/b": { "type": "string" } },
        "$ref": "#/definitions/a~1b"
    }));
    assert_eq!(why(&s, "1"), "/: expected string, got number");
}

#[test]
fn unsupported_keywords_are_refused_where_they_are() {
    assert!(
        refused(json!({ "properties": { "x": { "oneOf": [] } } }))
            .starts_with("/properties/x: keyword \"oneOf\" is not supported (mote supports type, ")
    );
    assert!(refused(json!({ "format": "date-time" })).starts_with("/: keyword \"format\""));
    assert!(
        refused(json!({ "$defs": { "a": { "items": { "uniqueItems": true } } } }))
            .starts_with("/$defs/a/items: keyword \"uniqueItems\"")
    );
    assert!(refused(json!({ "items": [{}] })).contains("prefixItems"));
    assert_eq!(
        refused(json!({ "properties": { "a": { "$id": "x" } } })),
        "/properties/a: \"$id\" is only supported at the root (references are resolved within this file)"
    );
    // Annotations are fine.
    schema(json!({
        "$id": "https://example.com/t", "$comment": "c", "description": "d", "default": 1,
        "examples": [1], "readOnly": true, "writeOnly": false, "deprecated": false
    }));
}

#[test]
fn malformed_keywords_are_refused() {
    let cases = [
        (
            json!({ "type": "float" }),
            "/: \"type\" names an unknown type \"float\"",
        ),
        (
            json!({ "type": [] }),
            "/: \"type\" must name at least one type",
        ),
        (json!({ "minimum": "1" }), "/: \"minimum\" must be a number"),
        (
            json!({ "minLength": -1 }),
            "/: \"minLength\" must be a whole number, 0 or more",
        ),
        (
            json!({ "maxItems": 1.5 }),
            "/: \"maxItems\" must be a whole number, 0 or more",
        ),
        (
            json!({ "required": [1] }),
            "/: \"required\" must be an array of property names (strings)",
        ),
        (
            json!({ "properties": { "a": 3 } }),
            "/properties/a: a schema must be an object or true or false",
        ),
        (
            json!({ "pattern": "(" }),
            "/: \"pattern\" is not a regular expression regex-lite accepts",
        ),
        (json!(1), "/: a schema must be an object or true or false"),
    ];
    for (s, want) in cases {
        let got = refused(s.clone());
        assert!(got.starts_with(want), "{s}: {got}");
    }
    assert_eq!(
        Schema::from_slice(b"{").unwrap_err().to_string(),
        "not JSON: EOF while parsing an object at line 1 column 1"
    );
    let big = vec![b' '; MAX_SCHEMA_BYTES + 1];
    assert_eq!(
        Schema::from_slice(&big).unwrap_err().to_string(),
        format!(
            "the schema is {} bytes, the limit is {MAX_SCHEMA_BYTES}",
            MAX_SCHEMA_BYTES + 1
        )
    );
}

#[test]
fn references_outside_the_file_or_to_nothing_are_refused() {
    for r in [
        "other.json",
        "https://example.com/s",
        "#anchor",
        "other.json#/a",
    ] {
        let got = refused(json!({ "$ref": r }));
        assert!(
            got.starts_with(&format!("/: \"$ref\" {r:?} is not supported")),
            "{got}"
        );
    }
    assert_eq!(
        refused(json!({ "properties": { "a": { "$ref": "#/$defs/missing" } } })),
        "/properties/a: \"$ref\" \"#/$defs/missing\" names nothing in this schema"
    );
}

#[test]
fn reference_cycles_without_a_value_between_are_refused() {
    assert_eq!(
        refused(json!({ "$ref": "#" })),
        "/: \"$ref\" comes back to this schema without a value in between: it would never end"
    );
    let got = refused(json!({
        "$defs": { "a": { "$ref": "#/$defs/b" }, "b": { "$ref": "#/$defs/a" } },
        "type": "object"
    }));
    assert!(got.starts_with("/$defs/a: \"$ref\" comes back"), "{got}");
    // A chain too long: a0 -> a1 -> ... -> a40.
    let mut defs = serde_json::Map::new();
    for i in 0..40 {
        defs.insert(
            format!("a{i}"),
            json!({ "$ref": format!("#/$defs/a{}", i + 1) }),
        );
    }
    defs.insert("a40".into(), json!(true));
    let got = refused(json!({ "$defs": defs }));
    assert!(got.contains("a chain of more than 32"), "{got}");
}

#[test]
fn a_costly_schema_stops_after_its_step_budget() {
    // Every level applies both `properties.x` and, through a $ref, `properties.x` again:
    // the subschemas per value double with each level of the payload.
    let s = schema(json!({
        "$defs": { "n": { "properties": { "x": { "$ref": "#/$defs/m" } } },
                   "m": { "$ref": "#/$defs/n", "properties": { "x": { "$ref": "#/$defs/m" } } } },
        "$ref": "#/$defs/m"
    }));
    let mut payload = String::from("1");
    for _ in 0..40 {
        payload = format!("{{\"x\":{payload}}}");
    }
    let got = why(&s, &payload);
    assert!(
        got.contains("the schema applies more than 1048576 subschemas"),
        "{got}"
    );
}

#[test]
fn a_large_payload_has_a_budget_to_match() {
    // 1,100,000 items, each one visit (plus the root): over MAX_STEPS, within 8 per byte.
    let s = schema(json!({ "type": "array", "items": { "type": "integer" } }));
    let payload = format!("[{}0]", "0,".repeat(1_099_999));
    assert_eq!(s.check(payload.as_bytes()), Ok(()));
    let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert!(
        s.validate(&value).is_err(),
        "validate keeps the fixed budget"
    );
}

#[test]
fn boolean_schemas() {
    let s = schema(json!(false));
    assert_eq!(
        why(&s, "1"),
        "/: no value is allowed here (the schema is false)"
    );
    let s = schema(json!({ "additionalProperties": { "type": "number" } }));
    assert_eq!(why(&s, r#"{"a":"x"}"#), "/a: expected number, got string");
    assert_eq!(schema(json!(true)).check(b"[1]"), Ok(()));
}
