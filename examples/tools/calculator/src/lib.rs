//! `calculator`: a read-only tool component (world `agentflow:agent/tool`, side effect
//! `none`) that evaluates arithmetic expressions. It is granted nothing (see
//! `agentflow-tool.toml`); bad expressions are `invalid-args` errors naming the offset,
//! never a trap.
//!
//! Arguments: `{"expression": "3 * 19.99 + 4.5"}`. Output:
//! `{"expression": "3 * 19.99 + 4.5", "value": 64.47}`.

mod eval;

use agentflow_sdk::tool::{Call, Description, SideEffect, Tool, ToolError};
use serde::{Deserialize, Serialize};

/// Longest expression accepted, in bytes.
const MAX_EXPRESSION_BYTES: usize = 4096;

struct Calculator;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    expression: String,
}

#[derive(Serialize)]
struct Output {
    expression: String,
    value: f64,
}

impl Tool for Calculator {
    type Args = Args;
    type Output = Output;

    fn describe() -> Description {
        let functions: Vec<&str> = eval::FUNCTIONS.iter().map(|(name, _)| *name).collect();
        Description::new(
            "calculator",
            format!(
                "Evaluates an arithmetic expression: numbers, + - * / % ^, parentheses, \
                 the constants pi and e, and the functions {}.",
                functions.join(", ")
            ),
            SideEffect::None,
        )
        .schema(serde_json::json!({
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "maxLength": MAX_EXPRESSION_BYTES,
                    "description": "e.g. (2 + 3) * sqrt(16)",
                },
            },
            "required": ["expression"],
            "additionalProperties": false,
        }))
    }

    fn call(_call: &mut Call, args: Args) -> Result<Output, ToolError> {
        if args.expression.len() > MAX_EXPRESSION_BYTES {
            return Err(ToolError::InvalidArgs(format!(
                "the expression is {} bytes long, at most {MAX_EXPRESSION_BYTES} are accepted",
                args.expression.len()
            )));
        }
        let value = eval::evaluate(&args.expression)
            .map_err(|e| ToolError::InvalidArgs(format!("`{}`: {e}", args.expression)))?;
        Ok(Output {
            expression: args.expression,
            value,
        })
    }
}

agentflow_sdk::export_tool!(Calculator);

#[cfg(test)]
mod tests {
    use super::*;
    use agentflow_sdk::tool::invoke;

    fn call(args: &str) -> Result<String, ToolError> {
        invoke::<Calculator>(&Call::new("key", "run"), args).map(|done| {
            assert!(
                done.effects.is_empty(),
                "a read-only tool reports no effects"
            );
            done.output
        })
    }

    #[test]
    fn evaluates_through_the_json_path() {
        let out: serde_json::Value =
            serde_json::from_str(&call(r#"{"expression": "(2 + 3) * 4"}"#).unwrap()).unwrap();
        assert_eq!(out["value"], 20.0);
        assert_eq!(out["expression"], "(2 + 3) * 4");
    }

    #[test]
    fn bad_arguments_are_invalid_args() {
        for args in [
            r#"{"expression": "1 / 0"}"#,
            r#"{"expr": "1"}"#,
            r#"{"expression": 12}"#,
            "not json",
        ] {
            match call(args) {
                Err(ToolError::InvalidArgs(why)) => assert!(!why.is_empty()),
                other => panic!("{args}: expected invalid-args, got {other:?}"),
            }
        }
        let long = serde_json::json!({ "expression": "1+".repeat(3000) + "1" }).to_string();
        assert!(
            matches!(call(&long), Err(ToolError::InvalidArgs(m)) if m.contains("at most 4096"))
        );
    }

    #[test]
    fn describes_itself_as_read_only() {
        let d = Calculator::describe();
        assert_eq!(d.name, "calculator");
        assert_eq!(d.side_effect, SideEffect::None);
        assert_eq!(d.undo, None);
        let schema: serde_json::Value = serde_json::from_str(&d.args_schema).unwrap();
        assert_eq!(schema["required"][0], "expression");
    }
}
