//! `probe-validator`: a validator component (world `agentflow:agent/validator`) for
//! tests, steered by directives in the validated task's input:
//!
//! * `probe:trap` — panics (the host must answer `uncertain`);
//! * `probe:loop` — spins forever (stopped by the CPU limit: `uncertain`);
//! * `probe:kv` — reads key `verdict` with the `kv` tool: `pass` passes, anything
//!   else fails (semantic); a refused tool call is `uncertain`, naming the error;
//! * otherwise the output fails (partial) if it contains `probe:bad`, else passes.
//!
//! Every check records a reasoning step through `trace`.

wit_bindgen::generate!({ path: "../../wit", world: "validator" });

use agentflow::agent::{tools, trace};

struct Probe;

fn fail(reason: String, category: Category) -> Report {
    Report {
        verdict: Verdict::Fail(reason),
        category: Some(category),
    }
}

impl Guest for Probe {
    fn validate(task: String, output: String) -> Report {
        trace::step(
            "probing the output",
            "probe",
            &format!("{} bytes of output", output.len()),
            1.0,
        );
        if task.contains("probe:trap") {
            panic!("the probe validator was told to trap");
        }
        if task.contains("probe:loop") {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        if task.contains("probe:kv") {
            return match tools::call("kv", r#"{"op":"get","key":"verdict"}"#) {
                Ok(v) if v.contains("pass") => Report {
                    verdict: Verdict::Pass,
                    category: None,
                },
                Ok(v) => fail(format!("kv says the verdict is {v}"), Category::Semantic),
                Err(e) => Report {
                    verdict: Verdict::Uncertain(format!("kv refused: {e:?}")),
                    category: None,
                },
            };
        }
        if output.contains("probe:bad") {
            return fail("the output contains probe:bad".into(), Category::Partial);
        }
        Report {
            verdict: Verdict::Pass,
            category: None,
        }
    }
}

export!(Probe);
