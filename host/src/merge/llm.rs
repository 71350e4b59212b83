//! The LLM merge of a semantic conflict: the merge model gets the base, both sides'
//! diffs and both tasks' descriptions ([`merge_prompt`]), its reply is parsed
//! ([`parse_merge_reply`]) and the merged text checked ([`check_merged`]) before the
//! merge's decision accepts it; otherwise the conflict goes to a human.

use super::MergeConfig;
use crate::ledger::EventKind;
use crate::supervisor::RunContext;
use crate::supervisor::host_llm::{self, HostCall};
use serde_json::{Value, json};
use std::sync::Arc;

/// The three versions the merge model sees.
pub(super) struct Sides<'a> {
    pub subject: &'a str,
    pub base: &'a str,
    pub ours: &'a str,
    pub theirs: &'a str,
    pub ours_label: String,
    pub theirs_label: String,
}

/// The merge model's prompt.
fn merge_prompt(s: &Sides<'_>) -> String {
    format!(
        "You are merging parallel edits to `{}`.\n\nBase version:\n{}\n\n\
         Change A ({}), as a diff from the base:\n{}\n\nChange B ({}), as a diff from the base:\n{}\n\n\
         Reply with the whole merged text between a line `MERGED:` and a line `END MERGED`, \
         keeping the intent of both changes, then a line `REASONING:` and why. If the changes \
         contradict each other so that no merge keeps both intents, reply `CONTRADICTORY:` and why.",
        s.subject,
        s.base,
        s.ours_label,
        diffy::create_patch(s.base, s.ours),
        s.theirs_label,
        diffy::create_patch(s.base, s.theirs),
    )
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
    let max_out = (crate::providers::estimate_tokens(sides.theirs) * 2 + 400).min(32_000);
    let call = HostCall {
        task_id: parent,
        model: &model,
        prompt: merge_prompt(sides),
        max_output_tokens: max_out,
        task_type: "merge",
        kind: EventKind::MergeLlm,
        request: json!({ "subject": sides.subject }),
        budget_task: None,
    };
    host_llm::call(run, call, |text| {
        let parsed = parse_merge_reply(text).map_err(|e| e.to_string());
        (parsed, Value::Null)
    })
    .await
    .map_err(|e| e.to_string())
}

/// A merged text must carry no conflict markers and pass the validators declared for
/// agent `merge` (programmatic ones: schema, length, patterns).
pub(super) fn check_merged(run: &RunContext, text: &str) -> Result<(), String> {
    if text
        .lines()
        .any(|l| l.starts_with("<<<<<<<") || l.starts_with(">>>>>>>"))
    {
        return Err("it still has conflict markers".into());
    }
    for v in run
        .settings
        .validators
        .iter()
        .filter(|v| v.agents.iter().any(|a| a == "merge"))
    {
        if let crate::checks::Verdict::Fail(why) = crate::checks::programmatic(v, text) {
            return Err(format!("validator `{}`: {why}", v.kind.name()));
        }
    }
    Ok(())
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
