//! `webscraper`: the seed's runaway decomposition. Asked to scrape a site, the agent
//! asks the model what must be built first and delegates that to a sub-agent, which
//! does the same — an HTTP client, then a TCP/IP stack, then a network driver… Under
//! the supervisor's constraints (max depth, total cost, approval over a cost) a spawn
//! is eventually refused; the agent that was refused falls back to a pragmatic plan
//! with what it has, and every level above completes with it.
//!
//! Input: the task, e.g. `Scrape product prices from shop.example.com`. Run it with
//! `--config examples/webscraper/agentflow.toml` (max depth 3, a small budget, the mock
//! script of the runaway).

use agentflow_sdk::prelude::*;

fn run(task: String) -> Result<String, Error> {
    let depth = task.matches(" → ").count();
    let current = task
        .rsplit(" → ")
        .next()
        .unwrap_or(&task)
        .trim()
        .to_string();
    let next = Request::new()
        .user(format!(
            "Task: {current}. What must be built first? Reply with one task."
        ))
        .task_type("next-step")
        .max_tokens(60)
        .send()?
        .text;
    let next = next.trim().trim_end_matches('.').to_string();
    trace::step(
        format!("to {current}, first: {next}"),
        "llm:next-step",
        &next,
        0.6,
    );

    // Each level down is estimated four times as expensive as the one above.
    let estimate = 0.1 * 4f64.powi(depth as i32);
    let spawned = Spawn::new(next.clone(), format!("{task} → {next}"))
        .estimated_cost(estimate)
        .spawn();
    let (delegated, why_not) = match spawned {
        Ok(id) => match tasks::wait(id) {
            Outcome::Completed(out) => (Some(out), None),
            other => (None, Some(format!("{other:?}"))),
        },
        Err(e) => (None, Some(e.to_string())),
    };
    match (delegated, why_not) {
        (Some(out), _) => {
            trace::step(format!("{next} is done"), "tasks:wait", &out, 0.8);
            Ok(format!("{current}: built on [{out}]"))
        }
        (None, Some(why)) => {
            // The pragmatic fallback: do the work with what exists instead of building more.
            trace::step(
                format!("cannot delegate `{next}`: {why}"),
                "fallback",
                "use what exists",
                0.9,
            );
            let plan = Request::new()
                .user(format!(
                    "Give a pragmatic plan to {current} without building `{next}`."
                ))
                .task_type("pragmatic-plan")
                .max_tokens(120)
                .send()?
                .text;
            Ok(format!("{current}: pragmatic plan ({why}): {plan}"))
        }
        (None, None) => unreachable!("a failure always has a reason"),
    }
}

export_agent!(run);
