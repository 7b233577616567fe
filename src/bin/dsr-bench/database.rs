//! The fresh database a spawned orchestrator runs on. Every run starts
//! empty, so figures do not depend on what earlier runs left behind (the
//! backlog scenario builds its history on purpose): SQLite gets a new file
//! in a temporary directory, PostgreSQL a new database on the named server,
//! dropped at the end.

use std::path::PathBuf;

use anyhow::{Context, bail};
use dsr_orchestrator::store::ScratchDatabase;

use crate::cli::Backend;

/// A database created for this run.
pub struct FreshDatabase {
    /// The URL the orchestrator is given.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    kind: Kind,
}

enum Kind {
    /// The directory holding the SQLite file; removed on drop unless kept.
    Sqlite(Option<tempfile::TempDir>, PathBuf),
    /// The PostgreSQL database.
    Postgres(Box<ScratchDatabase>),
}

impl FreshDatabase {
    /// Creates an empty database on the backend `url` names.
    pub async fn create(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let dir = tempfile::Builder::new()
                .prefix("dsr-bench-")
                .tempdir()
                .context("cannot create a temporary directory for the SQLite database")?;
            let path = dir.path().join("dsr.db");
            Ok(Self {
                url: format!("sqlite://{}", path.display()),
                backend: Backend::Sqlite,
                kind: Kind::Sqlite(Some(dir), path),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let db = ScratchDatabase::create(url, "dsr_bench").await?;
            Ok(Self {
                url: db.url.clone(),
                backend: Backend::Postgres,
                kind: Kind::Postgres(Box::new(db)),
            })
        } else {
            bail!("--database-url must start with sqlite:// or postgres://")
        }
    }

    /// Where the data is, for the "kept" notice.
    pub fn location(&self) -> String {
        match &self.kind {
            Kind::Sqlite(_, path) => path.display().to_string(),
            Kind::Postgres(db) => format!("PostgreSQL database {}", db.name()),
        }
    }

    /// Removes the database, unless `keep`; then says where it is.
    pub async fn finish(self, keep: bool) -> anyhow::Result<()> {
        let location = self.location();
        match self.kind {
            Kind::Sqlite(Some(dir), _) if keep => {
                let _ = dir.keep();
            }
            // The TempDir removes itself when dropped.
            Kind::Sqlite(..) => return Ok(()),
            Kind::Postgres(db) if keep => db.keep(),
            Kind::Postgres(db) => return db.drop_now().await,
        }
        eprintln!("dsr-bench: database kept: {location}");
        Ok(())
    }
}
