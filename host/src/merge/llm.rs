//! The LLM merge of a semantic conflict: the merge model gets the base and every
//! revision's diff with its task's description — all of them in one prompt, however
//! many proposals conflict ([`merge_prompt`]) — its reply is parsed
//! ([`parse_merge_reply`]) and the merged text checked ([`check_merged`]: no conflict
//! markers, and the whole validator set of agent `merge`, judges and components
//! included) before the merge's decision accepts it; otherwise the conflict goes to a
//! human.

use super::MergeConfig;
use crate::ledger::EventKind;
use crate::supervisor::RunContext;
use crate::supervisor::host_llm::{self, HostCall};
use serde_json::{Value, json};
use std::sync::Arc;

/// What the merge model sees: the base and every revision of it, each labelled with
/// its task.
pub(super) struct Sides<'a> {
    pub subject: &'a str,
    pub base: &'a str,
    /// (label, text), two or more.
    pub revisions: Vec<(String, &'a str)>,
}

/// The merge model's prompt: the base, then each revision as a diff from it.
fn merge_prompt(s: &Sides<'_>) -> String {
    use std::fmt::Write as _;
    let n = s.revisions.len();
    let mut prompt = format!(
        "You are merging parallel edits to `{}`: {n} revisions of one base, all at once.\n\n\
         Base version:\n{}\n",
        s.subject, s.base
    );
    for (i, (label, text)) in s.revisions.iter().enumerate() {
        let _ = write!(
            prompt,
            "\nChange {} ({label}), as a diff from the base:\n{}\n",
            i + 1,
            diffy::create_patch(s.base, text)
        );
    }
    prompt.push_str(
        "\nReply with the whole merged text between a line `MERGED:` and a line `END MERGED`, \
         keeping the intent of every change, then a line `REASONING:` and why. If the changes \
         contradict each other so that no merge keeps every intent, reply `CONTRADICTORY:` and why.",
    );
    prompt
}

/// Why the merge model's reply gives no merge.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MergeReplyError {
    #[error("the merge model judged the changes contradictory: {0}")]
    Contradictory(String),
    #[error("the merge model's reply has no `MERGED:` section")]
    NoMergedSection,
    #[error("the merge model's reply has no `END MERGED` line")]
    NoEndLine,
}

/// Parse the merge model's reply: `Ok((merged, reasoning))` or why it cannot merge.
pub fn parse_merge_reply(reply: &str) -> Result<(String, String), MergeReplyError> {
    if let Some(at) = reply.find("CONTRADICTORY:") {
        return Err(MergeReplyError::Contradictory(
            reply[at + 14..].trim().to_string(),
        ));
    }
    let start = reply
        .find("MERGED:")
        .ok_or(MergeReplyError::NoMergedSection)?;
    let rest = &reply[start + 7..];
    let rest = rest.strip_prefix('\n').unwrap_or(rest);
    let end = rest.find("END MERGED").ok_or(MergeReplyError::NoEndLine)?;
    let merged = rest[..end].to_string();
    let reasoning = rest[end..]
        .find("REASONING:")
        .map(|r| rest[end + r + 10..].trim().to_string())
        .unwrap_or_default();
    Ok((merged, reasoning))
}

/// Ask the merge model; its call is a `merge.llm` event charged to the parent's budget.
pub(super) async fn llm_merge(
    run: &Arc<RunContext>,
    cfg: &MergeConfig,
    parent: u64,
    sides: &Sides<'_>,
) -> Result<(String, String), String> {
    let scheduler = &run.scheduler;
    let model = match &cfg.model {
        Some(m) => scheduler.model(m).cloned(),
        None => {
            let mut models: Vec<_> = scheduler.models().to_vec();
            models.sort_by(|a, b| {
                b.quality
                    .partial_cmp(&a.quality)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            models.into_iter().next()
        }
    }
    .ok_or_else(|| "no merge model in the catalog".to_string())?;
    let longest = sides
        .revisions
        .iter()
        .map(|(_, t)| crate::providers::estimate_tokens(t))
        .max()
        .unwrap_or(0);
    let max_out = (longest * 2 + 400).min(32_000);
    let call = HostCall {
        task_id: parent,
        model: &model,
        prompt: merge_prompt(sides),
        max_output_tokens: max_out,
        task_type: "merge",
        kind: EventKind::MergeLlm,
        request: json!({ "subject": sides.subject, "revisions": sides.revisions.len() }),
        budget_task: None,
    };
    host_llm::call(run, call, |text| {
        let parsed = parse_merge_reply(text).map_err(|e| e.to_string());
        (parsed, Value::Null)
    })
    .await
    .map_err(|e| e.to_string())
}

/// A merged text must carry no conflict markers and pass every validator declared for
/// agent `merge` — schema, length and patterns, and judges and validator components
/// too (run by the layer above through [`crate::supervisor::TaskRunner`], as the work
/// of task `parent`, whose component `agent` is).
pub(super) async fn check_merged(
    run: &Arc<RunContext>,
    parent: u64,
    agent: &crate::supervisor::ComponentRef,
    subject: &str,
    text: &str,
) -> Result<(), String> {
    if text
        .lines()
        .any(|l| l.starts_with("<<<<<<<") || l.starts_with(">>>>>>>"))
    {
        return Err("it still has conflict markers".into());
    }
    if !run
        .settings
        .validators
        .iter()
        .any(|v| v.agents.iter().any(|a| a == "merge"))
    {
        return Ok(());
    }
    let input = format!("merge of `{subject}`");
    run.runner
        .validate_merged(run.clone(), parent, agent, &input, text)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replies() {
        let (text, why) =
            parse_merge_reply("MERGED:\nfn a() {}\nEND MERGED\nREASONING: both kept").unwrap();
        assert_eq!(text, "fn a() {}\n");
        assert_eq!(why, "both kept");
        assert!(parse_merge_reply("CONTRADICTORY: one deletes what the other edits").is_err());
        assert!(parse_merge_reply("sure, here you go").is_err());
    }
}
