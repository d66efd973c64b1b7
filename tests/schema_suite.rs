//! The official JSON-Schema-Test-Suite (draft 2020-12) against `mote::schema`, for the
//! keywords it supports. The files are vendored in `tests/data/json-schema-test-suite/`
//! (MIT, see its README for where they came from). A group whose schema uses a keyword
//! mote does not support must be refused at load time, and is listed in [`SKIPPED`] with
//! the reason; every other group must load, and every case in it must come out as the
//! suite says.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::Path;

use mote::schema::Schema;
use serde_json::Value;

const FILES: &[&str] = &[
    "additionalProperties",
    "boolean_schema",
    "const",
    "default",
    "defs",
    "enum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "infinite-loop-detection",
    "items",
    "maxItems",
    "maxLength",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "pattern",
    "properties",
    "ref",
    "required",
    "type",
];

/// Groups refused at load, by file and description, with the keyword that refuses them.
const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "additionalProperties",
        "additionalProperties being false does not allow other properties",
        "keyword \"patternProperties\"",
    ),
    (
        "additionalProperties",
        "non-ASCII pattern with additionalProperties",
        "keyword \"patternProperties\"",
    ),
    (
        "additionalProperties",
        "additionalProperties does not look in applicators",
        "keyword \"allOf\"",
    ),
    (
        "additionalProperties",
        "additionalProperties with propertyNames",
        "keyword \"propertyNames\"",
    ),
    (
        "additionalProperties",
        "dependentSchemas with additionalProperties",
        "keyword \"dependentSchemas\"",
    ),
    (
        "defs",
        "validate definition against metaschema",
        "\"$ref\" \"https://json-schema.org/draft/2020-12/schema\"",
    ),
    (
        "infinite-loop-detection",
        "evaluating the same schema location against the same data location twice is not a sign of an infinite loop",
        "keyword \"allOf\"",
    ),
    ("items", "items and subitems", "keyword \"prefixItems\""),
    (
        "items",
        "prefixItems with no additional items allowed",
        "keyword \"prefixItems\"",
    ),
    (
        "items",
        "items does not look in applicators, valid case",
        "keyword \"allOf\"",
    ),
    (
        "items",
        "prefixItems validation adjusts the starting index for items",
        "keyword \"prefixItems\"",
    ),
    (
        "items",
        "items with heterogeneous array",
        "keyword \"prefixItems\"",
    ),
    (
        "properties",
        "properties, patternProperties, additionalProperties interaction",
        "keyword \"patternProperties\"",
    ),
    (
        "ref",
        "relative pointer ref to array",
        "keyword \"prefixItems\"",
    ),
    (
        "ref",
        "remote ref, containing refs itself",
        "\"$ref\" \"https://json-schema.org/draft/2020-12/schema\"",
    ),
    (
        "ref",
        "Recursive references between schemas",
        "\"$id\" is only supported at the root",
    ),
    (
        "ref",
        "ref creates new scope when adjacent to keywords",
        "keyword \"unevaluatedProperties\"",
    ),
    (
        "ref",
        "refs with relative uris and defs",
        "\"$id\" is only supported at the root",
    ),
    (
        "ref",
        "relative refs with absolute uris and defs",
        "\"$id\" is only supported at the root",
    ),
    (
        "ref",
        "$id must be resolved against nearest parent, not just immediate parent",
        "\"$id\" is only supported at the root",
    ),
    (
        "ref",
        "order of evaluation: $id and $ref",
        "\"$id\" is only supported at the root",
    ),
    (
        "ref",
        "order of evaluation: $id and $anchor and $ref",
        "keyword \"$anchor\"",
    ),
    (
        "ref",
        "simple URN base URI with $ref via the URN",
        "\"$ref\" \"urn:uuid:deadbeef-1234-ffff-ffff-4321feebdaed\"",
    ),
    (
        "ref",
        "URN base URI with URN and JSON pointer ref",
        "\"$ref\" \"urn:uuid:deadbeef-1234-0000-0000-4321feebdaed#/$defs/bar\"",
    ),
    (
        "ref",
        "URN base URI with URN and anchor ref",
        "keyword \"$anchor\"",
    ),
    (
        "ref",
        "URN ref with nested pointer ref",
        "\"$id\" is only supported at the root",
    ),
    ("ref", "ref to if", "keyword \"if\""),
    ("ref", "ref to then", "keyword \"then\""),
    ("ref", "ref to else", "keyword \"else\""),
    (
        "ref",
        "ref with absolute-path-reference",
        "\"$id\" is only supported at the root",
    ),
    (
        "ref",
        "empty tokens in $ref json-pointer",
        "keyword \"allOf\"",
    ),
];

#[test]
fn the_official_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/json-schema-test-suite/draft2020-12");
    let mut refused = Vec::new();
    let mut failures = Vec::new();
    let (mut groups, mut cases) = (0, 0);
    for file in FILES {
        let text = std::fs::read_to_string(dir.join(format!("{file}.json"))).unwrap();
        let suite: Vec<Value> = serde_json::from_str(&text).unwrap();
        for group in &suite {
            let description = group["description"].as_str().unwrap();
            let schema = match Schema::compile(&group["schema"]) {
                Ok(s) => s,
                Err(e) => {
                    refused.push((file.to_string(), description.to_string(), e.to_string()));
                    continue;
                }
            };
            groups += 1;
            for case in group["tests"].as_array().unwrap() {
                cases += 1;
                let want = case["valid"].as_bool().unwrap();
                let got = schema.validate(&case["data"]);
                if got.is_ok() != want {
                    failures.push(format!(
                        "{file}: {description}: {}: expected {}, got {got:?}",
                        case["description"],
                        if want { "valid" } else { "invalid" }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let listed: Vec<(String, String)> = SKIPPED
        .iter()
        .map(|(f, d, _)| (f.to_string(), d.to_string()))
        .collect();
    let got: Vec<(String, String)> = refused
        .iter()
        .map(|(f, d, _)| (f.clone(), d.clone()))
        .collect();
    assert_eq!(
        got, listed,
        "the groups refused at load are the ones listed"
    );
    for ((_, _, why), (_, _, keyword)) in refused.iter().zip(SKIPPED) {
        assert!(why.contains(keyword), "{why} should name {keyword}");
    }
    println!(
        "{groups} groups, {cases} cases passed; {} groups skipped",
        refused.len()
    );
    assert!(cases > 300, "{cases} cases");
}
