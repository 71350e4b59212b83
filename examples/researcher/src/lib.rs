//! `researcher`: answers a question by decomposing it. In root mode (plain-text
//! input) it asks the model to split the question into three sub-questions, spawns
//! one child of this same component per sub-question, waits for them all, saves the
//! collected answers in a checkpoint and asks the model to summarize them. In child
//! mode (input `{"mode":"answer","question":"..."}`) it answers one sub-question
//! with a single model call. Failed children show up in the summary prompt as
//! `(failed: reason)` instead of failing the run.

use agentflow_sdk::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ChildInput {
    mode: String,
    question: String,
}

/// The checkpointed state: the question and each sub-question's answer.
#[derive(Serialize)]
struct Answers<'a> {
    question: &'a str,
    answers: Vec<Answer<'a>>,
}

#[derive(Serialize)]
struct Answer<'a> {
    question: &'a str,
    answer: &'a str,
}

fn run(input: String) -> Result<String, Error> {
    match serde_json::from_str::<ChildInput>(&input) {
        Ok(child) if child.mode == "answer" => answer(&child.question),
        _ => research(&input),
    }
}

/// Child mode: one model call.
fn answer(question: &str) -> Result<String, Error> {
    let reply = Request::new()
        .system("Answer the question concisely, in at most three sentences.")
        .user(question)
        .task_type("answer")
        .send()?;
    trace::step(format!("answer: {question}"), "llm", &reply.text, 0.8);
    Ok(reply.text)
}

/// Root mode: decompose, fan out, summarize.
fn research(question: &str) -> Result<String, Error> {
    // 1. Plan.
    let plan = Request::new()
        .user(format!(
            "Split this question into 3 sub-questions. Reply with a JSON array of strings.\nQuestion: {question}"
        ))
        .task_type("decompose")
        .send()?;
    let subs: Vec<String> = match plan.json::<Vec<String>>() {
        Ok(v) if !v.is_empty() => v,
        _ => vec![question.to_string()],
    };
    trace::step(
        format!("decompose: {question}"),
        "llm:decompose",
        serde_json::to_string(&subs)?,
        0.7,
    );

    // 2. Fan out: one child per sub-question.
    let mut spawned = Vec::with_capacity(subs.len());
    for sub in &subs {
        let input = serde_json::to_string(&ChildInput {
            mode: "answer".into(),
            question: sub.clone(),
        })?;
        let id = Spawn::new(sub.as_str(), input)
            .reasoning(format!(
                "the model split the question into {} sub-questions, researched in parallel",
                subs.len()
            ))
            .spawn();
        spawned.push((sub, id));
    }

    // 3. Collect.
    let mut answers = Vec::with_capacity(spawned.len());
    for (sub, id) in spawned {
        let text = match id {
            Ok(id) => match tasks::wait(id) {
                Outcome::Completed(a) => a,
                Outcome::Failed(reason) => format!("(failed: {reason})"),
                Outcome::Cancelled => "(failed: cancelled)".to_string(),
                Outcome::UnknownTask => "(failed: unknown task)".to_string(),
            },
            Err(e) => format!("(failed: {e})"),
        };
        trace::step(format!("sub-question: {sub}"), "tasks:wait", &text, 0.8);
        answers.push((sub.clone(), text));
    }

    // 4. Checkpoint what we have before the last, most expensive call.
    checkpoint::save(
        &Answers {
            question,
            answers: answers
                .iter()
                .map(|(q, a)| Answer {
                    question: q,
                    answer: a,
                })
                .collect(),
        },
        format!("collected {} answers; summarizing next", answers.len()),
    )?;

    // 5. Summarize.
    let mut prompt = format!("Summarize the answers to: {question}\n");
    for (sub, text) in &answers {
        prompt.push_str(&format!("- {sub}: {}\n", text.replace('\n', " ")));
    }
    let summary = Request::new().user(prompt).task_type("summarize").send()?;
    trace::step("summarize the answers", "llm:summarize", &summary.text, 0.8);
    Ok(summary.text)
}

export_agent!(run);
