//! `hello`: the smallest agent. It makes one language-model call asking the model to
//! greet whoever (or whatever) the input names, and returns the reply text.

use agentflow_sdk::prelude::*;

fn run(name: String) -> Result<String, Error> {
    let reply = Request::new()
        .system("You are a friendly greeter. Answer with one short sentence.")
        .user(format!("Greet {name}."))
        .task_type("greet")
        .max_tokens(64)
        .send()?;
    trace::step(format!("greet {name}"), "llm", &reply.text, 1.0);
    Ok(reply.text)
}

export_agent!(run);
