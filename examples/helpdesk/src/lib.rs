//! `helpdesk`: an agent that uses the two example tool components
//! (`examples/tools/calculator`, `examples/tools/ticket`) through the SDK's tools API,
//! like any built-in tool.
//!
//! Given a customer's message about a bill, it asks the model for the arithmetic to
//! check, computes it with `calculator` (a bad expression is the tool's
//! `invalid-args`, handled, not fatal), opens a ticket with `ticket` and asks the model
//! to triage it: a `resolved` verdict closes the ticket again. The output is JSON:
//! `{"ticket": id, "status": "open"|"closed", "expression", "value"}`.
//!
//! Install the tools, then run it (the mock model's script is `mock-rules.toml`):
//!
//! ```text
//! agentflow tools install examples/tools/calculator
//! agentflow tools install examples/tools/ticket
//! agentflow run examples/helpdesk --config examples/helpdesk/agentflow.toml \
//!     --input "I bought 3 cables at 19.99 plus 4.50 shipping and was charged 70.00"
//! ```

use agentflow_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;

/// The tools' names as installed (`agentflow tools install` keeps the names the
/// components describe unless `--name` renames them).
const CALCULATOR: &str = "calculator";
const TICKET: &str = "ticket";

#[derive(Deserialize)]
struct Computed {
    value: f64,
}

#[derive(Deserialize)]
struct Ticket {
    id: String,
    status: String,
}

fn run(message: String) -> Result<String, Error> {
    let expression = Request::new()
        .system("Extract the arithmetic that checks the customer's bill. Answer with one expression only.")
        .user(message.clone())
        .task_type("extract-expression")
        .max_tokens(60)
        .send()?
        .text
        .trim()
        .to_string();

    let value =
        match tools::call_json::<Computed, _>(CALCULATOR, &json!({ "expression": expression })) {
            Ok(computed) => {
                trace::step(
                    format!("{expression} = {}", computed.value),
                    "tool:calculator",
                    computed.value.to_string(),
                    1.0,
                );
                Some(computed.value)
            }
            // The model's text was not arithmetic: carry on without a number.
            Err(Error::Tool(ToolError::InvalidArgs(why))) => {
                trace::step(
                    "the expression does not compute",
                    "tool:calculator",
                    &why,
                    0.5,
                );
                None
            }
            Err(e) => return Err(e),
        };
    let check = match value {
        Some(v) => format!("Check: {expression} = {v}"),
        None => format!("Check: `{expression}` could not be computed"),
    };

    let title = Request::new()
        .user(format!(
            "Write a short title for this support ticket: {message}"
        ))
        .task_type("ticket-title")
        .max_tokens(30)
        .send()?
        .text;
    let title: String = title
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(120)
        .collect();
    let title = if title.is_empty() {
        "Billing question".to_string()
    } else {
        title
    };
    let mut ticket: Ticket = tools::call_json(
        TICKET,
        &json!({ "op": "open", "title": title, "body": format!("{message}\n\n{check}") }),
    )?;
    trace::step(
        format!("opened ticket {}", ticket.id),
        "tool:ticket",
        &title,
        1.0,
    );

    let verdict = Request::new()
        .user(format!(
            "{check}. Customer: {message}. Answer `resolved` if the check settles it, else `escalate`."
        ))
        .task_type("triage")
        .max_tokens(20)
        .send()?
        .text;
    if verdict.to_lowercase().contains("resolved") {
        ticket = tools::call_json(TICKET, &json!({ "op": "close", "id": ticket.id }))?;
        trace::step(
            format!("closed ticket {}", ticket.id),
            "tool:ticket",
            &verdict,
            0.9,
        );
    }
    Ok(json!({
        "ticket": ticket.id,
        "status": ticket.status,
        "expression": expression,
        "value": value,
    })
    .to_string())
}

export_agent!(run);
