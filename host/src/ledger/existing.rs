//! Opening a ledger that must already exist, for the commands that read or decide on
//! recorded runs rather than start one: a missing file is an error naming it, never a
//! new empty ledger.

use super::Connection;
use super::Ledger;
use anyhow::bail;
use std::path::Path;

/// Refuse to go on without a ledger at `db`.
pub fn require(db: &Path) -> anyhow::Result<()> {
    if !db.exists() && super::db::postgres_url(db).is_none() {
        bail!("no ledger at {} (pass --db)", db.display());
    }
    Ok(())
}

/// The ledger at `db`, which must exist, opened for writing.
pub fn open(db: &Path) -> anyhow::Result<Ledger> {
    require(db)?;
    Ok(Ledger::open(db)?)
}

/// A read connection to the ledger at `db`, which must exist; opening it through
/// [`Ledger`] first creates or checks the schema.
pub fn reader(db: &Path) -> anyhow::Result<Connection> {
    if !db.exists() && super::db::postgres_url(db).is_none() {
        bail!(
            "no ledger at {} (run an agent first, or pass --db)",
            db.display()
        );
    }
    let ledger = Ledger::open(db)?;
    Ok(ledger.reader()?)
}
