//! `testwriter`: asked to write a unit test, it asks the cheapest suitable model for
//! one and returns the code. Paired with the `assert-check` validator component
//! (see `agentflow.toml`): a test that asserts nothing fails validation (semantic),
//! and `[retry] semantic = "escalate"` runs the task again on the best model of the
//! catalog with the validator's feedback in the prompt.

use agentflow_sdk::prelude::*;

/// The code of a reply: the first fenced block if there is one, else the whole text.
fn code_of(reply: &str) -> String {
    let Some(start) = reply.find("```") else {
        return reply.trim().to_string();
    };
    let after = &reply[start + 3..];
    let body = after.split_once('\n').map_or(after, |(_, rest)| rest);
    body.split("```").next().unwrap_or(body).trim().to_string()
}

fn run(task: String) -> Result<String, Error> {
    let reply = Request::new()
        .system("You write Rust unit tests. Reply with the test code only, in one ```rust block.")
        .user(format!("Write a unit test for: {task}"))
        .task_type("write-test")
        .priority(Priority::Cost)
        .max_tokens(400)
        .send()?;
    let code = code_of(&reply.text);
    trace::step(
        format!("asked {} for a test", reply.model),
        "llm:write-test",
        format!("{} lines of test code", code.lines().count()),
        0.7,
    );
    Ok(code)
}

export_agent!(run);
