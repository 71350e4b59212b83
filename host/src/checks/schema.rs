//! A JSON Schema subset for output validation: `type` (string, number, integer,
//! boolean, object, array, null, or a list of them), `enum`, `const`, `required`,
//! `properties`, `additionalProperties: false`, `items`, `minItems`/`maxItems`,
//! `minLength`/`maxLength`, `minimum`/`maximum`. Unknown keywords are ignored, so a
//! schema that relies on others (`pattern`, `$ref`, `oneOf`, …) is checked only on these.
//! The first violation is reported with its JSON path (`$.tests[0]: shorter than
//! minLength`), which is what a `feedback` retry shows the model.
//!
//! Hand-written rather than the `jsonschema` crate: that crate implements whole drafts
//! (`$ref` resolution, `format`s, `pattern` through fancy-regex, big-number arithmetic
//! for `multipleOf`) and, even with its default features off, brings 63 crates, 38 of
//! them new to the host (227 → 265 in `cargo tree -p agentflow -e normal`), on a
//! 2-core build, for the dozen keywords above. A check that needs the full language
//! belongs in a validator component (`kind = "component"`).

use serde_json::Value;

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// Where and how a value breaks a JSON schema (the message names the path).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaViolation(pub String);

/// Check `value` (at `path`, `""` for the root) against `schema`; the first
/// violation, with its path.
pub fn check(schema: &Value, value: &Value, path: &str) -> Result<(), SchemaViolation> {
    check_at(schema, value, path).map_err(SchemaViolation)
}

fn check_at(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let at = if path.is_empty() { "$" } else { path };
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, value),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_ok(t, value)),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: expected type {t}, got {}", short(value)));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!(
            "{at}: {} is not one of {}",
            short(value),
            Value::Array(options.clone())
        ));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        return Err(format!("{at}: expected {c}"));
    }
    if let Some(s) = value.as_str() {
        let n = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("{at}: shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: longer than maxLength"));
        }
    }
    if let Some(x) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x < m)
        {
            return Err(format!("{at}: {x} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x > m)
        {
            return Err(format!("{at}: {x} is above the maximum"));
        }
    }
    if let Some(obj) = value.as_object() {
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(key) {
                return Err(format!("{at}: missing required property `{key}`"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check_at(sub, v, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: unexpected property `{k}`"));
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("{at}: fewer than minItems"));
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: more than maxItems"));
        }
        if let Some(sub) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_at(sub, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    Ok(())
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_checks() {
        let schema = json!({"type": "object", "required": ["tests"], "properties": {
            "tests": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 3}}
        }});
        assert!(check_at(&schema, &json!({"tests": ["abc"]}), "").is_ok());
        assert!(
            check_at(&schema, &json!({"tests": []}), "")
                .unwrap_err()
                .contains("minItems")
        );
        assert!(
            check_at(&schema, &json!({"tests": ["a"]}), "")
                .unwrap_err()
                .contains("$.tests[0]")
        );
        assert!(
            check_at(&schema, &json!([1]), "")
                .unwrap_err()
                .contains("expected type")
        );
        assert!(
            check_at(&schema, &json!({}), "")
                .unwrap_err()
                .contains("missing required")
        );
    }
}
