//! The example tool components (`examples/tools/calculator`, `examples/tools/ticket`)
//! as the example agent `helpdesk` uses them: installed from their manifests, granted
//! by config, called through the SDK's tools API — the read-only calculator without an
//! intent, each ticket call after its intent — and the calculator's refusal of a bad
//! expression handled by the agent, not fatal to the run.

use crate::support::cli::*;
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A ledger in `dir` with both example tools installed: the calculator with its own
/// manifest (nothing granted), the ticket tool writing under `<dir>/data`.
fn ledger_with_tools(dir: &TempDir) -> PathBuf {
    let db = dir.ledger("helpdesk.db");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let ticket_manifest = dir.file(
        "ticket.toml",
        "[grants]\ndir = \"data\"\nread_only = false\n",
    );
    let calculator_manifest = repo_path("examples/tools/calculator/agentflow-tool.toml");
    for (tool, manifest) in [
        ("calculator", calculator_manifest),
        ("ticket", ticket_manifest),
    ] {
        let out = agentflow_on(
            &db,
            [
                "tools".as_ref(),
                "install".as_ref(),
                example(tool).as_os_str(),
                "--manifest".as_ref(),
                manifest.as_os_str(),
            ],
        );
        assert!(out.status.success(), "{tool}: {}", stderr(&out));
    }
    db
}

/// `agentflow run helpdesk --input MESSAGE --json` with the example's grants and mock
/// model script.
fn helpdesk(dir: &TempDir, db: &Path, message: &str) -> Value {
    let rules = repo_path("examples/helpdesk/mock-rules.toml");
    let config = dir.file(
        "helpdesk.toml",
        format!(
            "[tools]\ngrant = [\"calculator\", \"ticket\"]\n\n[llm.mock]\nrules_file = {:?}\n",
            rules.to_str().unwrap()
        ),
    );
    let out = agentflow()
        .arg("run")
        .arg(example("helpdesk"))
        .args(["--input", message, "--json", "--db"])
        .arg(db)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout_json(&out)
}

/// The `request` JSON of the run's events of `kind`, in order.
fn requests(db: &Path, kind: &str) -> Vec<Value> {
    crate::support::connect(db)
        .prepare("SELECT request FROM events WHERE kind = ?1 ORDER BY task_id, seq")
        .unwrap()
        .query_map([kind], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
        .collect()
}

/// A bill the calculator settles: computed, a ticket opened and closed again (two
/// intents, both ticket calls; none for the read-only calculator).
#[test]
fn helpdesk_computes_with_the_calculator_and_opens_and_closes_a_ticket() {
    let dir = TempDir::new("helpdesk");
    let db = ledger_with_tools(&dir);
    let report = helpdesk(
        &dir,
        &db,
        "I bought 3 cables at 19.99 plus 4.50 shipping and was charged 70.00",
    );
    assert_eq!(report["status"], "completed", "{report}");
    let output: Value = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["expression"], "3 * 19.99 + 4.50");
    assert_eq!(output["value"], 64.47);
    assert_eq!(output["status"], "closed", "triage said resolved: {output}");

    let on_disk = tickets(&dir);
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    assert_eq!(on_disk[0]["id"], output["ticket"]);
    assert_eq!(on_disk[0]["status"], "closed");
    assert_eq!(on_disk[0]["title"], "Invoice total disputed");
    assert!(
        on_disk[0]["body"]
            .as_str()
            .unwrap()
            .ends_with("Check: 3 * 19.99 + 4.50 = 64.47"),
        "{}",
        on_disk[0]["body"]
    );

    let intents = requests(&db, "tools.intent");
    assert_eq!(intents.len(), 2, "open and close: {intents:?}");
    assert!(
        intents
            .iter()
            .all(|i| i.to_string().contains("ticket") && !i.to_string().contains("calculator")),
        "{intents:?}"
    );
    let calls = requests(&db, "tools.call");
    assert_eq!(calls.len(), 3, "calculator, open, close: {calls:?}");
    assert!(
        calls[0].to_string().contains("calculator"),
        "{:?}",
        calls[0]
    );
}

/// A message without arithmetic: the calculator refuses the model's text as
/// `invalid-args`, the agent carries on, and the ticket stays open (escalated).
#[test]
fn helpdesk_survives_the_calculators_refusal_and_escalates() {
    let dir = TempDir::new("helpdesk-escalate");
    let db = ledger_with_tools(&dir);
    let report = helpdesk(&dir, &db, "The app logs me out every five minutes");
    assert_eq!(report["status"], "completed", "{report}");
    let output: Value = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["value"], Value::Null);
    assert_eq!(output["status"], "open");
    let on_disk = tickets(&dir);
    assert_eq!(on_disk.len(), 1);
    assert_eq!(on_disk[0]["status"], "open");
    assert!(
        on_disk[0]["body"]
            .as_str()
            .unwrap()
            .contains("`the bill looks wrong` could not be computed"),
        "{}",
        on_disk[0]["body"]
    );
    let refused: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'tools.call' AND status = 'error' \
         AND response LIKE '%invalid%'",
    );
    assert_eq!(refused, 1, "the calculator's refusal is recorded");
}
