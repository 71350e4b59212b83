//! Validator components: your own wasm code that checks a task's output before it
//! counts (world `agentflow:agent/validator`). The host runs a validator sandboxed like
//! an agent and lets it use only [`crate::tools`] (the tools its `grant` names) and
//! [`crate::trace`]; the agent-only interfaces (LLM, tasks, checkpoints) are not there.
//!
//! ```ignore
//! use agentflow_sdk::validator::{Category, Report};
//!
//! fn validate(_task: String, output: String) -> Report {
//!     if output.contains("assert") {
//!         Report::pass()
//!     } else {
//!         Report::fail(Category::Semantic, "the test asserts nothing")
//!     }
//! }
//! agentflow_sdk::export_validator!(validate);
//! ```
//!
//! Configure it with `[[validators]] kind = "component"`, `component = "path"`.

pub use crate::validator_wit::{Category, Report, Verdict};

impl Report {
    /// The output passes.
    pub fn pass() -> Report {
        Report {
            verdict: Verdict::Pass,
            category: None,
        }
    }

    /// The output is wrong, with the category of the failure and the reason (which
    /// becomes the retry's feedback).
    pub fn fail(category: Category, reason: impl Into<String>) -> Report {
        Report {
            verdict: Verdict::Fail(reason.into()),
            category: Some(category),
        }
    }

    /// The validator cannot decide; the task is not failed.
    pub fn uncertain(reason: impl Into<String>) -> Report {
        Report {
            verdict: Verdict::Uncertain(reason.into()),
            category: None,
        }
    }
}

/// Exports a function `fn(task: String, output: String) -> Report` as the component's
/// `validate`. Use it once per validator crate.
#[macro_export]
macro_rules! export_validator {
    ($f:path) => {
        const _: () = {
            #[doc(hidden)]
            struct __AgentflowValidator;

            impl $crate::validator_wit::Guest for __AgentflowValidator {
                fn validate(
                    task: ::std::string::String,
                    output: ::std::string::String,
                ) -> $crate::validator_wit::Report {
                    $f(task, output)
                }
            }

            $crate::validator_wit::export!(__AgentflowValidator);
        };
    };
}
