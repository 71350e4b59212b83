//! The host configuration a run was started with, as its ledger row records it, and
//! what differs from it now. A resume runs on the recorded configuration: the CLI
//! builds its host from it when no `--config` is given, and [`crate::Host::resume`]
//! refuses a host whose configuration differs, key by key, unless told otherwise.
//!
//! Recorded: every section that decides what a run does — `[llm]` with the contents
//! of each mock rules file read in, `[tools]`, `[limits]`, `[[validators]]`, `[merge]`,
//! `[retry]`, `[constraints]`, `[agents]`, … — without secrets (`api_key` is never
//! serialized; keys come from the environment variable named by `api_key_env`) and
//! without `cache_dir` and the `[observe]` exporter settings (`otlp_endpoint`, …), which
//! belong to the machine. Compared on resume: all of it but the host's own settings,
//! `[ledger]`, `[runtime]` and `[observe]`, which a resume may change.

use crate::HostConfig;
use crate::ledger::{self, existing};
use serde_json::{Map, Value};
use std::path::Path;

/// Top-level keys that configure the host process rather than the run.
const HOST_OWN: [&str; 4] = ["ledger", "runtime", "cache_dir", "observe"];

/// What a run records of `config`: its sections as JSON, rules files read in.
pub fn record(config: &HostConfig) -> anyhow::Result<Value> {
    let mut config = config.clone();
    config.llm = config.llm.inlined()?;
    config.cache_dir = None;
    // Where this machine sends its telemetry is not part of what the run does.
    config.observe.otlp_endpoint = None;
    config.observe.service_name = None;
    config.observe.metrics_interval_s = None;
    Ok(serde_json::to_value(&config)?)
}

/// The configuration a recorded value describes.
pub fn from_record(recorded: &Value) -> anyhow::Result<HostConfig> {
    let config: HostConfig = serde_json::from_value(recorded.clone())
        .map_err(|e| anyhow::anyhow!("the recorded configuration cannot be read: {e}"))?;
    config.validate()?;
    Ok(config)
}

/// The configuration run `run` (an id or a unique prefix) of the ledger at `db` was
/// started with; `None` for a run recorded by a host that did not record it.
pub fn of_run(db: &Path, run: &str) -> anyhow::Result<Option<HostConfig>> {
    let reader = existing::reader(db)?;
    let row = ledger::query::run(&reader, run)?
        .ok_or_else(|| anyhow::anyhow!("no run `{run}` in {}", db.display()))?;
    let Some((config_json, _)) = ledger::query::run_config(&reader, &row.run_id)? else {
        return Ok(None);
    };
    let stored: Value = serde_json::from_str(&config_json)?;
    match stored.get("host") {
        Some(host) if !host.is_null() => Ok(Some(from_record(host)?)),
        _ => Ok(None),
    }
}

/// One key whose value differs between the recorded configuration and now.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Change {
    /// Dotted path, e.g. `llm.mock.rules` or `limits.wall_ms`.
    pub key: String,
    /// The recorded value (`None`: not set).
    pub recorded: Option<Value>,
    /// The value now (`None`: not set).
    pub now: Option<Value>,
}

/// Every key whose value differs, in key order; objects are compared key by key,
/// anything else (arrays included) as a whole. The host's own sections are skipped.
pub fn changes(recorded: &Value, now: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    let empty = Map::new();
    let (a, b) = (
        recorded.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if !HOST_OWN.contains(&key.as_str()) {
            walk(key.clone(), a.get(key), b.get(key), &mut out);
        }
    }
    out
}

fn walk(key: String, recorded: Option<&Value>, now: Option<&Value>, out: &mut Vec<Change>) {
    let set = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    match (recorded, now) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(format!("{key}.{k}"), a.get(k), b.get(k), out);
            }
        }
        _ if set(recorded) == set(now) => {}
        _ => out.push(Change {
            key,
            recorded: set(recorded),
            now: set(now),
        }),
    }
}

/// The changes as indented lines, `key: recorded X, now Y`, long values cut short.
pub fn describe(changes: &[Change]) -> String {
    let show = |v: &Option<Value>| match v {
        None => "(not set)".to_string(),
        Some(v) => {
            let text = v.to_string();
            if text.chars().count() > 60 {
                let cut: String = text.chars().take(57).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
    };
    changes
        .iter()
        .map(|c| {
            format!(
                "\n  {}: recorded {}, now {}",
                c.key,
                show(&c.recorded),
                show(&c.now)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RICH: &str = r#"
        [limits]
        wall_ms = 30000
        max_depth = 3
        [budget]
        usd = 0.5
        [tools]
        grant = ["kv", "workspace"]
        [llm]
        provider = "mock"
        [llm.mock]
        latency_ms = 3
        [[llm.mock.rules]]
        contains = "hello"
        reply = "hi"
        [llm.openai]
        base_url = "http://127.0.0.1:9/v1"
        api_key = "sk-secret"
        [llm.endpoints.local.openai]
        base_url = "http://127.0.0.1:8/v1"
        [merge]
        critical_paths = ["deploy/*"]
        [[validators]]
        kind = "length"
        max_chars = 100
        [ledger]
        sync = "normal"
    "#;

    #[test]
    fn a_record_reads_back_to_the_same_config_without_its_secrets() {
        let config = HostConfig::from_toml(RICH).unwrap();
        let recorded = record(&config).unwrap();
        assert!(
            !recorded.to_string().contains("sk-secret"),
            "no secret in the record: {recorded}"
        );
        let back = from_record(&recorded).unwrap();
        assert_eq!(record(&back).unwrap(), recorded);
        assert!(changes(&recorded, &record(&back).unwrap()).is_empty());
        assert_eq!(back.llm.providers.mock.rules.len(), 1);
        assert_eq!(back.limits.wall_ms, 30_000);
    }

    #[test]
    fn a_rules_file_is_recorded_by_its_contents() {
        let dir = std::env::temp_dir().join(format!("af-recorded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\ncontains = \"x\"\nreply = \"from the file\"\n",
        )
        .unwrap();
        let config = HostConfig::from_toml(&format!(
            "[llm.mock]\nrules_file = {:?}\n",
            rules.display().to_string()
        ))
        .unwrap();
        let recorded = record(&config).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let back = from_record(&recorded).unwrap();
        assert_eq!(back.llm.providers.mock.rules_file, None);
        assert_eq!(back.llm.providers.mock.rules[0].reply, "from the file");
    }

    #[test]
    fn changes_name_each_key_and_skip_the_hosts_own_settings() {
        let a = record(&HostConfig::from_toml(RICH).unwrap()).unwrap();
        let changed = RICH
            .replace("wall_ms = 30000", "wall_ms = 1000")
            .replace("reply = \"hi\"", "reply = \"bye\"")
            .replace("sync = \"normal\"", "sync = \"full\"");
        let b = record(&HostConfig::from_toml(&changed).unwrap()).unwrap();
        let keys: Vec<String> = changes(&a, &b).into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["limits.wall_ms", "llm.mock.rules"]);
        let text = describe(&changes(&a, &b));
        assert!(
            text.contains("limits.wall_ms: recorded 30000, now 1000"),
            "{text}"
        );
        let none = record(&HostConfig::default()).unwrap();
        assert!(
            changes(&a, &none)
                .iter()
                .any(|c| c.key == "tools.grant" && c.now.is_some()),
            "{:?}",
            changes(&a, &none)
        );
    }

    #[test]
    fn the_otlp_exporter_settings_are_not_recorded_nor_a_change() {
        let observed = format!(
            "{RICH}\n[observe]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"x\"\n"
        );
        let config = HostConfig::from_toml(&observed).unwrap();
        assert_eq!(
            config.observe.endpoint().as_deref(),
            Some("http://collector:4318")
        );
        let recorded = record(&config).unwrap();
        assert!(
            recorded["observe"].get("otlp_endpoint").is_none()
                && recorded["observe"].get("service_name").is_none(),
            "{recorded}"
        );
        let plain = record(&HostConfig::from_toml(RICH).unwrap()).unwrap();
        assert!(changes(&plain, &recorded).is_empty());
        let bad = HostConfig::from_toml("[observe]\notlp_endpoint = \"collector:4318\"\n");
        assert!(format!("{:#}", bad.unwrap_err()).contains("[observe] otlp_endpoint"));
    }
}
