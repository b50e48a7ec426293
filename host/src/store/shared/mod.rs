//! What the two backends have in common, written once. Statements whose
//! SQL is the same in both dialects are written with [`sql::sql!`] and run
//! through a backend's [`sql::Conn`]; the roles with no dialect difference
//! at all ([`crate::store::Claims`], [`crate::store::Registry`],
//! [`crate::store::Dlq`]) are implemented here for any [`SqlStore`]. What
//! differs (how a write transaction is taken, `UNNEST` arrays against
//! multi-row `VALUES`, `RETURNING`, notices) stays in `sqlite.rs` and
//! `postgres.rs`.

use std::future::Future;
use std::ops::DerefMut;

use crate::store::{DlqEntry, DlqFilter, Result};

pub(crate) mod builders;
mod claims;
pub(crate) mod commit;
mod dlq;
pub(crate) mod log;
pub(crate) mod outbox;
pub(crate) mod outcomes;
mod registry;
pub(crate) mod rows;
pub(crate) mod sql;

pub use commit::dead_letter_event;

/// A store on a SQL database: how its connections and write transactions
/// are had. The shared roles run on these.
pub(crate) trait SqlStore: Send + Sync + 'static {
    /// A connection of the database.
    type Conn: sql::Conn;
    /// A pooled connection, for reads.
    type Read: DerefMut<Target = Self::Conn> + Send;
    /// A write transaction; dropped without [`SqlStore::commit_tx`], it rolls
    /// back.
    type Write: DerefMut<Target = Self::Conn> + Send;

    /// A connection to read with.
    fn read(&self) -> impl Future<Output = Result<Self::Read>> + Send;

    /// Starts a write transaction (once it is this writer's turn, where
    /// writers take turns).
    fn write(&self) -> impl Future<Output = Result<Self::Write>> + Send;

    /// Commits `tx`.
    fn commit_tx(tx: Self::Write) -> impl Future<Output = Result<()>> + Send;

    /// The DLQ entries `filter` asks for, oldest first (see
    /// [`builders::StoreDb::select_dlq`]).
    fn list_dlq(
        conn: &mut Self::Conn,
        filter: &DlqFilter,
    ) -> impl Future<Output = Result<Vec<DlqEntry>>> + Send;
}
