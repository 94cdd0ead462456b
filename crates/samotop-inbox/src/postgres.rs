//! The PostgreSQL store (placeholder while it is written).

use crate::error::Error;
use crate::store::Hooks;

/// The PostgreSQL store.
pub(crate) enum Postgres {}

impl Postgres {
    pub(crate) async fn connect(url: &str, _hooks: Hooks) -> Result<Postgres, Error> {
        Err(Error::Open {
            what: url.into(),
            reason: "not yet".into(),
        })
    }
}
