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
//! guest, and a CEL expression has no side effects and no unbounded loops. The parser
//! (`cel` is built on antlr) recurses deeply — a debug build overflows a 2 MiB stack
//! on 16 nested parentheses — so compiling and evaluating run on a thread of their
//! own with a 64 MiB stack (reserved, touched only as used), an expression is at most
//! [`MAX_LEN`] bytes (the parser itself stops nesting at 96), and comprehensions
//! (`exists`, `all`, ...) nest at most [`MAX_COMPREHENSION_NESTING`] deep, so the
//! guest-chosen `tools` list cannot make one take exponential time.

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

/// The longest expression accepted, in bytes.
pub const MAX_LEN: usize = 2000;

/// How deep comprehensions may nest (`tools.exists(a, tools.all(b, ...))` is 2).
pub const MAX_COMPREHENSION_NESTING: usize = 2;

/// The stack of the thread that compiles and evaluates.
const STACK_BYTES: usize = 64 << 20;

/// Run `f` on a thread with a [`STACK_BYTES`] stack; `None` if it could not start or
/// panicked.
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("approval-expr".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(s, f)
            .ok()?
            .join()
            .ok()
    })
}

/// Compile one expression on this thread (see [`on_big_stack`]), refusing a syntax
/// error, a variable other than [`VARIABLES`], or a size over the limits; the error
/// is one line.
fn compile_here(source: &str) -> Result<Program, String> {
    if source.len() > MAX_LEN {
        return Err(format!(
            "{} bytes long, over the limit of {MAX_LEN}",
            source.len()
        ));
    }
    let program = Program::compile(source).map_err(|e| {
        // cel prints `ERROR: <input>:1:11: msg` then the source and a caret line.
        e.to_string()
            .lines()
            .filter(|l| !l.starts_with('|') && !l.trim().is_empty())
            .map(|l| l.trim_start_matches("ERROR: <input>:").trim())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut walk = Walk::default();
    walk.visit(program.expression(), 0);
    if walk.deepest > MAX_COMPREHENSION_NESTING {
        return Err(format!(
            "comprehensions nest {} deep, over the limit of {MAX_COMPREHENSION_NESTING}",
            walk.deepest
        ));
    }
    walk.free.retain(|v| !VARIABLES.contains(v));
    if let Some(name) = walk.free.first() {
        return Err(format!(
            "unknown variable `{name}` (the variables are {})",
            VARIABLES.join(", ")
        ));
    }
    Ok(program)
}

/// Check that one expression compiles; the error is one line.
pub fn check(source: &str) -> Result<(), String> {
    on_big_stack(|| compile_here(source).map(drop))
        .unwrap_or_else(|| Err("the expression parser failed on it".into()))
}

/// Check every expression of `[constraints.approval] when`.
pub fn validate(expressions: &[String]) -> anyhow::Result<()> {
    for source in expressions {
        check(source)
            .map_err(|e| anyhow::anyhow!("[constraints.approval] when: `{source}`: {e}"))?;
    }
    Ok(())
}

/// Why `facts` needs approval by `expressions`, if it does: the first expression that
/// is true, or that cannot give a boolean (deny by default).
pub fn reason(expressions: &[String], facts: &SpawnFacts) -> Option<String> {
    if expressions.is_empty() {
        return None;
    }
    let held = "so it waits for a human (deny by default)";
    on_big_stack(|| {
        let mut context = Context::default();
        context.add_variable_from_value("cost_usd", facts.cost_usd);
        context.add_variable_from_value("depth", i64::from(facts.depth));
        context.add_variable_from_value("tools", facts.tools.to_vec());
        context.add_variable_from_value("description", facts.description.to_string());
        context.add_variable_from_value("agent", facts.agent.to_string());
        expressions.iter().find_map(|source| {
            let program = match compile_here(source) {
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
    })
    .unwrap_or_else(|| {
        Some(format!(
            "the approval expressions failed to evaluate, {held}"
        ))
    })
}

/// What an expression reads and how deep its comprehensions nest.
#[derive(Default)]
struct Walk<'a> {
    /// Identifiers bound by the enclosing comprehensions.
    bound: Vec<&'a str>,
    /// Identifiers read that no enclosing comprehension binds.
    free: BTreeSet<&'a str>,
    deepest: usize,
}

impl<'a> Walk<'a> {
    /// Walk `e`, inside `nesting` comprehensions.
    fn visit(&mut self, e: &'a IdedExpr, nesting: usize) {
        match &e.expr {
            Expr::Ident(name) => {
                if !name.starts_with('@') && !self.bound.contains(&name.as_str()) {
                    self.free.insert(name);
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target, nesting);
                }
                for arg in &call.args {
                    self.visit(arg, nesting);
                }
            }
            Expr::Comprehension(c) => {
                self.deepest = self.deepest.max(nesting + 1);
                self.visit(&c.iter_range, nesting);
                self.visit(&c.accu_init, nesting);
                let before = self.bound.len();
                self.bound.push(&c.iter_var);
                self.bound.extend(c.iter_var2.as_deref());
                self.bound.push(&c.accu_var);
                for part in [&c.loop_cond, &c.loop_step, &c.result] {
                    self.visit(part, nesting + 1);
                }
                self.bound.truncate(before);
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.visit(element, nesting);
                }
            }
            Expr::Map(map) => self.entries(map.entries.iter().map(|e| &e.expr), nesting),
            Expr::Struct(s) => self.entries(s.entries.iter().map(|e| &e.expr), nesting),
            Expr::Select(select) => self.visit(&select.operand, nesting),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entries(&mut self, entries: impl Iterator<Item = &'a EntryExpr>, nesting: usize) {
        for entry in entries {
            match entry {
                EntryExpr::StructField(f) => self.visit(&f.value, nesting),
                EntryExpr::MapEntry(m) => {
                    self.visit(&m.key, nesting);
                    self.visit(&m.value, nesting);
                }
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
        // Too deep for cel's parser on a small stack (an abort, not an error, on a 2 MiB
        // thread in a debug build): here an error, on any caller's stack.
        let nested = format!("{}depth{} > 1", "(".repeat(40), ")".repeat(40));
        validate(&when(&[&nested])).unwrap();
        let err = validate(&when(&[&format!(
            "{}1{}",
            "[".repeat(500),
            "]".repeat(500)
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("Recursion limit"), "{err}");
        let long = vec!["depth > 1"; 300].join(" || ");
        let err = validate(&when(&[&long])).unwrap_err().to_string();
        assert!(err.contains("over the limit of 2000"), "{err}");
        let err = validate(&when(&[
            "tools.all(a, tools.all(b, tools.exists(c, a + b + c == '')))",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("comprehensions nest 3 deep"), "{err}");
        validate(&when(&["tools.all(a, tools.exists(b, a == b))"])).unwrap();
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
