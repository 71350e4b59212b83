//! Approval rules as expressions (`[constraints.approval] when = [...]`): CEL, the
//! Common Expression Language (the `cel` crate), over what a spawn request says.
//!
//! An expression reads five variables — `cost_usd` (the spawn's estimated cost, else
//! its budget share, else 0), `depth` (the child's), `tools` (the tools the child
//! declares), `description` and `agent` (the `[agents]` name it asked for, or the name
//! of the spawner's own component) — and any that is true makes the child wait for a
//! human, the reason naming the expression. Every expression is compiled when the
//! config loads, and a syntax error or an unknown variable is refused there, naming
//! the key. One that still cannot give a boolean when a spawn is judged (a type error,
//! `depth` alone) does not fail the host: the child waits for a human, the reason
//! saying why (deny by default).
//!
//! Only operators write these: they come from the host's config file, never from a
//! guest, and a CEL expression has no side effects and no unbounded loops.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Program, Value};
use std::collections::BTreeSet;

/// The variables an expression may read.
pub const VARIABLES: [&str; 5] = ["cost_usd", "depth", "tools", "description", "agent"];

/// What an approval rule sees of a spawn request.
#[derive(Clone, Copy, Debug)]
pub struct SpawnFacts<'a> {
    /// Its estimated cost (or budget share), USD.
    pub cost_usd: f64,
    /// The child's depth (the root is 0).
    pub depth: u32,
    /// The tools the child declares.
    pub tools: &'a [String],
    pub description: &'a str,
    /// The agent the child runs.
    pub agent: &'a str,
}

/// Compile one expression, refusing a syntax error or a variable other than
/// [`VARIABLES`]; the error is one line.
pub fn compile(source: &str) -> Result<Program, String> {
    let program = Program::compile(source).map_err(|e| {
        // cel prints `ERROR: <input>:1:11: msg` then the source and a caret line.
        e.to_string()
            .lines()
            .filter(|l| !l.starts_with('|') && !l.trim().is_empty())
            .map(|l| l.trim_start_matches("ERROR: <input>:").trim())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut unknown = BTreeSet::new();
    free_variables(program.expression(), &mut Vec::new(), &mut unknown);
    unknown.retain(|v| !VARIABLES.contains(v));
    if let Some(name) = unknown.first() {
        return Err(format!(
            "unknown variable `{name}` (the variables are {})",
            VARIABLES.join(", ")
        ));
    }
    Ok(program)
}

/// Check every expression of `[constraints.approval] when`.
pub fn validate(expressions: &[String]) -> anyhow::Result<()> {
    for source in expressions {
        compile(source)
            .map_err(|e| anyhow::anyhow!("[constraints.approval] when: `{source}`: {e}"))?;
    }
    Ok(())
}

/// Why `facts` needs approval by `expressions`, if it does: the first expression that
/// is true, or that cannot give a boolean (deny by default).
pub fn reason(expressions: &[String], facts: &SpawnFacts) -> Option<String> {
    let mut context = Context::default();
    context.add_variable_from_value("cost_usd", facts.cost_usd);
    context.add_variable_from_value("depth", i64::from(facts.depth));
    context.add_variable_from_value("tools", facts.tools.to_vec());
    context.add_variable_from_value("description", facts.description.to_string());
    context.add_variable_from_value("agent", facts.agent.to_string());
    let held = "so it waits for a human (deny by default)";
    expressions.iter().find_map(|source| {
        let program = match compile(source) {
            Ok(p) => p,
            Err(e) => return Some(format!("expression `{source}` is invalid ({e}), {held}")),
        };
        match program.execute(&context) {
            Ok(Value::Bool(true)) => Some(format!("expression `{source}` is true")),
            Ok(Value::Bool(false)) => None,
            Ok(other) => Some(format!(
                "expression `{source}` gave {other:?}, not true or false, {held}"
            )),
            Err(e) => Some(format!(
                "expression `{source}` could not be evaluated ({e}), {held}"
            )),
        }
    })
}

/// The identifiers `e` reads that no enclosing comprehension (`exists`, `all`, `map`,
/// `filter`) binds.
fn free_variables<'a>(e: &'a IdedExpr, bound: &mut Vec<&'a str>, out: &mut BTreeSet<&'a str>) {
    match &e.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(&name.as_str()) {
                out.insert(name);
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, out);
            }
            for arg in &call.args {
                free_variables(arg, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(&c.iter_var);
            bound.extend(c.iter_var2.as_deref());
            bound.push(&c.accu_var);
            for part in [&c.loop_cond, &c.loop_step, &c.result] {
                free_variables(part, bound, out);
            }
            bound.truncate(before);
        }
        Expr::List(list) => {
            for element in &list.elements {
                free_variables(element, bound, out);
            }
        }
        Expr::Map(map) => entries(map.entries.iter().map(|e| &e.expr), bound, out),
        Expr::Struct(s) => entries(s.entries.iter().map(|e| &e.expr), bound, out),
        Expr::Select(select) => free_variables(&select.operand, bound, out),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entries<'a>(
    entries: impl Iterator<Item = &'a EntryExpr>,
    bound: &mut Vec<&'a str>,
    out: &mut BTreeSet<&'a str>,
) {
    for entry in entries {
        match entry {
            EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
            EntryExpr::MapEntry(m) => {
                free_variables(&m.key, bound, out);
                free_variables(&m.value, bound, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(cost_usd: f64, depth: u32, tools: &'a [String], agent: &'a str) -> SpawnFacts<'a> {
        SpawnFacts {
            cost_usd,
            depth,
            tools,
            description: "deploy the web app to prod",
            agent,
        }
    }

    fn when(exprs: &[&str]) -> Vec<String> {
        exprs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn valid_expressions_compile_and_bad_ones_are_refused_naming_the_key() {
        let good = when(&[
            "cost_usd > 0.5 && depth >= 2",
            "'deploy' in tools",
            "agent == 'deployer' && description.contains('prod')",
            "tools.exists(t, t.startsWith('work'))",
            "size(tools) > 2 || cost_usd > 1",
        ]);
        validate(&good).unwrap();

        let err = validate(&when(&["depth > 1", "cost_usd >"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[constraints.approval] when: `cost_usd >`: 1:"),
            "{err}"
        );
        assert!(err.contains("Syntax error"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        let err = validate(&when(&["cost > 1"])).unwrap_err().to_string();
        assert!(err.contains("unknown variable `cost`"), "{err}");
        assert!(
            err.contains("cost_usd, depth, tools, description, agent"),
            "{err}"
        );
        // A comprehension's own variable is not a typo; outside it, it is.
        let err = validate(&when(&["tools.all(t, t != '') && t == ''"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variable `t`"), "{err}");
    }

    #[test]
    fn any_true_expression_needs_approval_and_names_itself() {
        let rules = when(&[
            "cost_usd > 0.5 && depth >= 2",
            "'deploy' in tools",
            "agent == 'deployer' && description.contains('prod')",
        ]);
        let none: Vec<String> = vec![];
        let deploy = vec!["kv".to_string(), "deploy".to_string()];
        assert_eq!(reason(&rules, &facts(0.1, 1, &none, "scripted")), None);
        assert_eq!(
            reason(&rules, &facts(0.9, 1, &none, "scripted")),
            None,
            "cost alone is not enough"
        );
        assert_eq!(
            reason(&rules, &facts(0.9, 2, &none, "scripted")).unwrap(),
            "expression `cost_usd > 0.5 && depth >= 2` is true"
        );
        assert_eq!(
            reason(&rules, &facts(0.0, 1, &deploy, "scripted")).unwrap(),
            "expression `'deploy' in tools` is true"
        );
        assert!(
            reason(&rules, &facts(0.0, 1, &none, "deployer"))
                .unwrap()
                .contains("`agent == 'deployer' && description.contains('prod')`")
        );
        // Integers and doubles compare as numbers.
        assert!(reason(&when(&["cost_usd >= 1"]), &facts(1.0, 0, &none, "a")).is_some());
        assert!(reason(&when(&["depth > 0.5"]), &facts(0.0, 1, &none, "a")).is_some());
    }

    #[test]
    fn an_expression_that_gives_no_boolean_holds_the_child_without_failing() {
        let none: Vec<String> = vec![];
        let f = facts(0.0, 2, &none, "a");
        let r = reason(&when(&["depth"]), &f).unwrap();
        assert!(r.contains("expression `depth` gave Int(2)"), "{r}");
        assert!(r.contains("deny by default"), "{r}");
        let r = reason(&when(&["description + 1 == 'x'"]), &f).unwrap();
        assert!(r.contains("could not be evaluated"), "{r}");
        assert!(r.contains("deny by default"), "{r}");
        // Never validated (a stored config, a library caller): still held, not a crash.
        let r = reason(&when(&["depth >"]), &f).unwrap();
        assert!(
            r.contains("is invalid") && r.contains("deny by default"),
            "{r}"
        );
    }
}
