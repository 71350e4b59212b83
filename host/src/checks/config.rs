//! The `[[validators]]` config: the keys every validator takes, and its kind (a tagged
//! enum, one settings struct per kind, each denying keys it does not know); reading
//! validators back from a ledger, including the flat shape earlier hosts stored.

use super::command::CommandCheck;
use super::{Category, Claim};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One `[[validators]]` entry: the keys every kind takes, and the kind with its own.
///
/// In TOML and JSON it is one flat table, `kind` naming the variant of
/// [`ValidatorKind`]. Serde cannot deny unknown keys on a struct with a flattened field,
/// so deserializing takes the common keys off first and hands the rest to the kind,
/// whose struct denies any key it does not know: a key of another kind (`schema` on a
/// `length` validator) is refused like a typo.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ValidatorConfig {
    /// Display name (default: the kind).
    pub name: Option<String>,
    /// Agents (component names) it applies to; empty: all.
    pub agents: Vec<String>,
    /// Root task only (the run's output) instead of every task.
    pub root_only: bool,
    /// Overrides the kind's default category.
    pub category: Option<Category>,
    /// What it checks, and how.
    #[serde(flatten)]
    pub kind: ValidatorKind,
}

/// The kinds of validator, tagged by `kind` in config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ValidatorKind {
    JsonSchema(JsonSchemaCheck),
    Length(LengthCheck),
    Pattern(PatternCheck),
    Claims(ClaimsCheck),
    Judge(JudgeCheck),
    Component(ComponentCheck),
    Outcome(OutcomeCheck),
    Command(CommandCheck),
}

/// `kind = "json-schema"`: the output is JSON that satisfies the schema.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaCheck {
    /// The schema (a subset, see [`schema`]).
    pub schema: Value,
}

/// `kind = "length"`: bounds in characters.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LengthCheck {
    pub min_chars: Option<usize>,
    pub max_chars: Option<usize>,
}

/// `kind = "pattern"`: globs the output must / must not match.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PatternCheck {
    pub must_match: Vec<String>,
    pub must_not_match: Vec<String>,
}

/// `kind = "claims"`: output patterns and the tools that must back them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsCheck {
    pub claims: Vec<Claim>,
    /// Tools the agent is expected to have used successfully, claim or not.
    pub expected_tools: Vec<String>,
}

/// `kind = "judge"`: an LLM scores the output against a rubric.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JudgeCheck {
    /// The criteria.
    pub rubric: String,
    /// The lowest passing score, 0–10 (default 7).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The model (default: the highest-quality catalog model other than the producer's).
    #[serde(default)]
    pub model: Option<String>,
}

impl JudgeCheck {
    /// The lowest passing score.
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(7.0)
    }
}

/// `kind = "component"`: a validator component checks the output.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentCheck {
    /// The validator component (`.wasm`, world `validator`; `agentflow run` also takes
    /// a crate directory and builds it).
    pub component: String,
    /// Tools the component may call, if the run has them too.
    #[serde(default)]
    pub grant: Vec<String>,
}

/// `kind = "outcome"`: a tool (`tool`, `args`) or a component checks the world after
/// the task; exactly one of the two ([`ValidatorConfig::validate`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutcomeCheck {
    /// The tool that checks the world (must be granted to the run).
    pub tool: Option<String>,
    /// The tool's arguments; `{output}` and `{effect.id}` are filled in.
    pub args: Option<Value>,
    /// Or a validator component, as for `kind = "component"`.
    pub component: Option<String>,
    /// The component's tools, as for `kind = "component"`.
    pub grant: Vec<String>,
}

/// The kinds, as an error message lists them.
const KINDS: &str = "json-schema, length, pattern, claims, judge, component, outcome or command";

impl ValidatorKind {
    /// The kind's name, as in config and events.
    pub fn name(&self) -> &'static str {
        match self {
            ValidatorKind::JsonSchema(_) => "json-schema",
            ValidatorKind::Length(_) => "length",
            ValidatorKind::Pattern(_) => "pattern",
            ValidatorKind::Claims(_) => "claims",
            ValidatorKind::Judge(_) => "judge",
            ValidatorKind::Component(_) => "component",
            ValidatorKind::Outcome(_) => "outcome",
            ValidatorKind::Command(_) => "command",
        }
    }

    /// The key kind `name` cannot do without, with a hint, so that a missing one is
    /// named plainly (the types require it too). `Err` for a kind that does not exist.
    fn required_key(name: &str) -> Result<Option<(&'static str, &'static str)>, ()> {
        match name {
            "json-schema" => Ok(Some(("schema", ""))),
            "judge" => Ok(Some(("rubric", ""))),
            "component" => Ok(Some(("component", " (path to a .wasm)"))),
            "command" => Ok(Some(("command", " (the program and its arguments)"))),
            "length" | "pattern" | "claims" | "outcome" => Ok(None),
            _ => Err(()),
        }
    }
}

impl<'de> Deserialize<'de> for ValidatorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entry = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        ValidatorConfig::from_entry(entry).map_err(serde::de::Error::custom)
    }
}

impl ValidatorConfig {
    /// A config entry (TOML table or JSON object), with errors that name the key to fix.
    fn from_entry(mut entry: serde_json::Map<String, Value>) -> Result<Self, String> {
        let kind = match entry.get("kind") {
            Some(Value::String(kind)) => kind.clone(),
            Some(other) => return Err(format!("[[validators]] kind {other}: expected {KINDS}")),
            None => return Err(format!("[[validators]] entry needs `kind`: {KINDS}")),
        };
        match ValidatorKind::required_key(&kind) {
            Err(()) => return Err(format!("[[validators]] kind `{kind}`: expected {KINDS}")),
            Ok(Some((key, hint))) if !entry.contains_key(key) => {
                return Err(format!("[[validators]] {kind} needs `{key}`{hint}"));
            }
            Ok(_) => {}
        }
        fn common<T: serde::de::DeserializeOwned + Default>(
            entry: &mut serde_json::Map<String, Value>,
            kind: &str,
            key: &str,
        ) -> Result<T, String> {
            match entry.remove(key) {
                None | Some(Value::Null) => Ok(T::default()),
                Some(value) => serde_json::from_value(value)
                    .map_err(|e| format!("[[validators]] {kind} `{key}`: {e}")),
            }
        }
        Ok(ValidatorConfig {
            name: common(&mut entry, &kind, "name")?,
            agents: common(&mut entry, &kind, "agents")?,
            root_only: common(&mut entry, &kind, "root_only")?,
            category: common(&mut entry, &kind, "category")?,
            kind: serde_json::from_value(Value::Object(entry)).map_err(|e| {
                let e = e.to_string();
                // Serde lists the kind's own keys only.
                let also = if e.starts_with("unknown field") {
                    " (every kind also takes name, agents, root_only and category)"
                } else {
                    ""
                };
                format!("[[validators]] {kind}: {e}{also}")
            })?,
        })
    }

    /// A validator as a ledger stores it (`runs.config_json`, `task_validators`): this
    /// host's shape, or the flat one earlier hosts wrote, every kind's keys present
    /// (null or empty where unused), so that a run they recorded resumes with its
    /// validators.
    pub fn from_stored(value: Value) -> Result<Self, serde_json::Error> {
        match ValidatorConfig::deserialize(&value) {
            Ok(v) => Ok(v),
            Err(e) => serde_json::from_value::<super::flat::FlatValidatorConfig>(value)
                .ok()
                .and_then(super::flat::FlatValidatorConfig::into_config)
                .ok_or(e),
        }
    }

    pub(crate) fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.kind.name().to_string())
    }

    /// The validator component it runs, if any (a component, or an outcome check by one).
    pub fn component(&self) -> Option<&str> {
        match &self.kind {
            ValidatorKind::Component(c) => Some(&c.component),
            ValidatorKind::Outcome(o) => o.component.as_deref(),
            _ => None,
        }
    }

    /// The component path, to replace it (`agentflow run` builds crate directories).
    pub fn component_mut(&mut self) -> Option<&mut String> {
        match &mut self.kind {
            ValidatorKind::Component(c) => Some(&mut c.component),
            ValidatorKind::Outcome(o) => o.component.as_mut(),
            _ => None,
        }
    }

    /// The tools its component may call (if the run has them too).
    pub fn grant(&self) -> &[String] {
        match &self.kind {
            ValidatorKind::Component(c) => &c.grant,
            ValidatorKind::Outcome(o) => &o.grant,
            _ => &[],
        }
    }

    /// The judge's settings, for a judge.
    pub fn judge(&self) -> Option<&JudgeCheck> {
        match &self.kind {
            ValidatorKind::Judge(j) => Some(j),
            _ => None,
        }
    }

    pub(crate) fn rank(&self) -> u8 {
        match self.kind {
            ValidatorKind::JsonSchema(_) | ValidatorKind::Length(_) | ValidatorKind::Pattern(_) => {
                0
            }
            ValidatorKind::Claims(_) | ValidatorKind::Component(_) | ValidatorKind::Command(_) => 1,
            ValidatorKind::Judge(_) => 2,
            ValidatorKind::Outcome(_) => 3,
        }
    }

    pub(crate) fn default_category(&self) -> Category {
        match self.kind {
            ValidatorKind::JsonSchema(_) => Category::Syntactic,
            ValidatorKind::Length(_) => Category::Partial,
            ValidatorKind::Claims(_) => Category::HallucinatedSuccess,
            ValidatorKind::Outcome(_) => Category::Degraded,
            ValidatorKind::Pattern(_)
            | ValidatorKind::Judge(_)
            | ValidatorKind::Component(_)
            | ValidatorKind::Command(_) => Category::Semantic,
        }
    }

    /// Reject entries that cannot work, naming the key. (Parsing already refused
    /// unknown kinds and keys and missing required ones.)
    pub fn validate(&self) -> anyhow::Result<()> {
        if let ValidatorKind::Outcome(o) = &self.kind
            && o.tool.is_some() == o.component.is_some()
        {
            anyhow::bail!(
                "[[validators]] outcome needs either `tool` (with `args`) or `component`"
            );
        }
        if let ValidatorKind::Command(c) = &self.kind {
            c.validate()?;
        }
        Ok(())
    }
}

/// For `#[serde(deserialize_with)]`: validators as a ledger stores them
/// ([`ValidatorConfig::from_stored`]).
pub fn stored_validators<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ValidatorConfig>, D::Error> {
    Vec::<Value>::deserialize(deserializer)?
        .into_iter()
        .map(|v| ValidatorConfig::from_stored(v).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<ValidatorConfig, String> {
        #[derive(Deserialize)]
        struct Doc {
            validators: Vec<ValidatorConfig>,
        }
        toml::from_str::<Doc>(text)
            .map(|mut d| d.validators.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_parses_from_toml_and_round_trips_through_json() {
        let entries = [
            "kind = \"json-schema\"\nschema = { type = \"object\", required = [\"tests\"] }",
            "kind = \"length\"\nmin_chars = 1",
            "kind = \"pattern\"\nmust_not_match = [\"*TODO*\"]",
            "kind = \"claims\"\nclaims = [{ pattern = \"*deployed*\", tool = \"cloud\" }]\nexpected_tools = []",
            "kind = \"judge\"\nrubric = \"The tests must assert behaviour.\"\nthreshold = 7",
            "kind = \"component\"\ncomponent = \"x.wasm\"\ngrant = [\"kv\"]\ncategory = \"semantic\"",
            "kind = \"outcome\"\nroot_only = true\ntool = \"cloud\"\nargs = { op = \"health\", id = \"{effect.id}\" }",
            "kind = \"command\"\ncommand = [\"cargo\", \"test\"]\ntimeout_ms = 500\nsyntactic_exit_codes = [2]",
        ];
        for (entry, kind) in entries.iter().zip([
            "json-schema",
            "length",
            "pattern",
            "claims",
            "judge",
            "component",
            "outcome",
            "command",
        ]) {
            let v = from_toml(&format!(
                "[[validators]]\nname = \"n\"\nagents = [\"a\"]\n{entry}"
            ))
            .unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(v.kind.name(), kind);
            assert_eq!(
                (v.name.as_deref(), v.agents.as_slice()),
                (Some("n"), &["a".to_string()][..])
            );
            v.validate().unwrap();
            let json = serde_json::to_value(&v).unwrap();
            assert_eq!(json["kind"], kind, "{json}");
            assert_eq!(
                serde_json::from_value::<ValidatorConfig>(json.clone()).unwrap(),
                v
            );
            assert_eq!(ValidatorConfig::from_stored(json).unwrap(), v);
        }
        let judge =
            from_toml("[[validators]]\nkind = \"judge\"\nrubric = \"r\"\nthreshold = 7").unwrap();
        assert_eq!(judge.judge().map(JudgeCheck::threshold), Some(7.0));
        assert_eq!(judge.label(), "judge");
    }

    /// Serde cannot deny unknown keys on a struct with a flattened field (nor on an
    /// internally tagged enum's container for its newtype variants): the common keys are
    /// taken off first and each kind's struct denies the rest.
    #[test]
    fn unknown_keys_are_refused_per_kind_and_common_keys_accepted_by_every_kind() {
        let err = from_toml("[[validators]]\nkind = \"pattern\"\ngrnat = [\"kv\"]").unwrap_err();
        assert!(
            err.contains("[[validators]] pattern: unknown field `grnat`"),
            "{err}"
        );
        // A key of another kind is no key of this one.
        let err =
            from_toml("[[validators]]\nkind = \"length\"\nmin_chars = 1\nschema = {}").unwrap_err();
        assert!(err.contains("unknown field `schema`"), "{err}");
        let err = serde_json::from_str::<ValidatorConfig>(
            r#"{"kind":"judge","rubric":"r","grant":["kv"]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `grant`"), "{err}");
        for kind in [
            r#""kind":"length""#,
            r#""kind":"judge","rubric":"r""#,
            r#""kind":"outcome","tool":"t""#,
        ] {
            let v: ValidatorConfig = serde_json::from_str(&format!(
                r#"{{{kind},"name":"x","agents":["a"],"root_only":true,"category":"partial"}}"#
            ))
            .unwrap();
            assert_eq!(
                (v.root_only, v.category, v.label()),
                (true, Some(Category::Partial), "x".to_string())
            );
        }
    }

    #[test]
    fn bad_entries_name_the_key_to_fix() {
        for (entry, expected) in [
            (
                "name = \"x\"",
                "[[validators]] entry needs `kind`: json-schema, length,",
            ),
            (
                "kind = \"vibes\"",
                "[[validators]] kind `vibes`: expected json-schema, length,",
            ),
            ("kind = 3", "[[validators]] kind 3: expected"),
            (
                "kind = \"json-schema\"",
                "[[validators]] json-schema needs `schema`",
            ),
            (
                "kind = \"judge\"\nthreshold = 7",
                "[[validators]] judge needs `rubric`",
            ),
            (
                "kind = \"component\"",
                "[[validators]] component needs `component` (path to a .wasm)",
            ),
            (
                "kind = \"length\"\nmin_chars = \"ten\"",
                "[[validators]] length: invalid type: string",
            ),
            (
                "kind = \"length\"\nroot_only = \"yes\"",
                "[[validators]] length `root_only`: invalid type",
            ),
        ] {
            let err = from_toml(&format!("[[validators]]\n{entry}")).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
        for entry in ["tool = \"t\"\ncomponent = \"c.wasm\"", "grant = [\"kv\"]"] {
            let v = from_toml(&format!("[[validators]]\nkind = \"outcome\"\n{entry}")).unwrap();
            let err = v.validate().unwrap_err().to_string();
            assert!(err.contains("outcome needs either `tool`"), "{err}");
        }
    }

    /// What hosts before the tagged kinds stored (`runs.config_json`, `task_validators`):
    /// every kind's keys, unused ones null or empty, and keys of other kinds they let pass.
    #[test]
    fn flat_entries_of_earlier_hosts_are_read_from_the_ledger() {
        let flat = |kind: &str, set: &str| {
            format!(
                r#"{{"name":null,"agents":[],"root_only":false,"kind":"{kind}","category":null,"schema":null,"min_chars":null,"max_chars":null,"must_match":[],"must_not_match":[],"claims":[],"expected_tools":[],"rubric":null,"threshold":null,"model":null,"component":null,"grant":[],"tool":null,"args":null{set}}}"#
            )
        };
        let stored = format!(
            "[{},{},{},{}]",
            flat(
                "length",
                r#","min_chars":10,"must_match":["ignored by a length check"]"#
            ),
            flat("judge", r#","rubric":"r","threshold":6.5"#),
            flat("json-schema", r#","schema":{"type":"object"}"#),
            flat("outcome", r#","tool":"cloud","args":{"op":"health"}"#),
        );
        let mut d = serde_json::Deserializer::from_str(&stored);
        let read = stored_validators(&mut d).unwrap();
        assert_eq!(
            read.iter().map(|v| v.kind.clone()).collect::<Vec<_>>(),
            vec![
                ValidatorKind::Length(LengthCheck {
                    min_chars: Some(10),
                    max_chars: None
                }),
                ValidatorKind::Judge(JudgeCheck {
                    rubric: "r".into(),
                    threshold: Some(6.5),
                    model: None
                }),
                ValidatorKind::JsonSchema(JsonSchemaCheck {
                    schema: serde_json::json!({"type": "object"})
                }),
                ValidatorKind::Outcome(OutcomeCheck {
                    tool: Some("cloud".into()),
                    args: Some(serde_json::json!({"op": "health"})),
                    component: None,
                    grant: vec![]
                }),
            ]
        );
        // Config is held to today's shape: the same flat entry is refused there.
        assert!(serde_json::from_str::<ValidatorConfig>(&flat("length", "")).is_err());
        // Something no host wrote stays an error.
        let err = ValidatorConfig::from_stored(serde_json::json!({"kind": "judge"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("judge needs `rubric`"), "{err}");
    }
}
