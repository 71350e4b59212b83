//! How hosts before [`ValidatorKind`] stored validators: one flat struct with every
//! kind's keys, as their ledgers hold it. Read only, by [`ValidatorConfig::from_stored`].

use super::config::{
    ClaimsCheck, ComponentCheck, JsonSchemaCheck, JudgeCheck, LengthCheck, OutcomeCheck,
    PatternCheck, ValidatorConfig, ValidatorKind,
};
use super::{Category, Claim};
use serde::Deserialize;
use serde_json::Value;

/// The flat `ValidatorConfig` of hosts before [`ValidatorKind`]: one struct with every
/// kind's keys, as their ledgers store it. Read only, by [`ValidatorConfig::from_stored`].
#[derive(Deserialize)]
pub(super) struct FlatValidatorConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    root_only: bool,
    kind: String,
    #[serde(default)]
    category: Option<Category>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    min_chars: Option<usize>,
    #[serde(default)]
    max_chars: Option<usize>,
    #[serde(default)]
    must_match: Vec<String>,
    #[serde(default)]
    must_not_match: Vec<String>,
    #[serde(default)]
    claims: Vec<Claim>,
    #[serde(default)]
    expected_tools: Vec<String>,
    #[serde(default)]
    rubric: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    grant: Vec<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    args: Option<Value>,
}

impl FlatValidatorConfig {
    /// The entry as this host has it; `None` where that host would have refused it.
    pub(super) fn into_config(self) -> Option<ValidatorConfig> {
        let kind = match self.kind.as_str() {
            "json-schema" => ValidatorKind::JsonSchema(JsonSchemaCheck {
                schema: self.schema?,
            }),
            "length" => ValidatorKind::Length(LengthCheck {
                min_chars: self.min_chars,
                max_chars: self.max_chars,
            }),
            "pattern" => ValidatorKind::Pattern(PatternCheck {
                must_match: self.must_match,
                must_not_match: self.must_not_match,
            }),
            "claims" => ValidatorKind::Claims(ClaimsCheck {
                claims: self.claims,
                expected_tools: self.expected_tools,
            }),
            "judge" => ValidatorKind::Judge(JudgeCheck {
                rubric: self.rubric?,
                threshold: self.threshold,
                model: self.model,
            }),
            "component" => ValidatorKind::Component(ComponentCheck {
                component: self.component?,
                grant: self.grant,
            }),
            "outcome" => ValidatorKind::Outcome(OutcomeCheck {
                tool: self.tool,
                args: self.args,
                component: self.component,
                grant: self.grant,
            }),
            _ => return None,
        };
        Some(ValidatorConfig {
            name: self.name,
            agents: self.agents,
            root_only: self.root_only,
            category: self.category,
            kind,
        })
    }
}
