//! The hub's PostgreSQL store: a pool and the versioned migrations in `gateway/migrations/hub`.
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The hub's schema, applied in order, each version once (`_sqlx_migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/hub");

/// Connects and brings the schema up to date.
pub async fn open(database_url: &str) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections(8).connect(database_url).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
