//! The hub's PostgreSQL store: a pool and the versioned migrations in `gateway/migrations/hub`.
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The hub's schema, applied in order, each version once (`_sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/hub");

/// Connections for the API and the hub's other work, beside one per ingest writer.
pub const SHARED_CONNECTIONS: u32 = 8;

/// Connects (`SHARED_CONNECTIONS` at most) and brings the schema up to date.
pub async fn open(database_url: &str) -> Result<PgPool, sqlx::Error> {
    open_sized(database_url, SHARED_CONNECTIONS).await
}

/// Connects with up to `connections` and brings the schema up to date.
pub async fn open_sized(database_url: &str, connections: u32) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections(connections).connect(database_url).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
