//! # Sluice test kit
//!
//! Test support for Sluice's tests (dev-only, not published): the servers
//! that integration tests need (PostgreSQL, a Kafka-compatible broker). A
//! test asks for one and gets `None` when it is not reachable; the test then
//! skips, with the reason printed. With `SLUICE_REQUIRE_SERVERS=1` (as
//! `.ci/run` sets) a missing server panics instead, so that CI can never pass
//! by skipping.
//!
//! * [`kafka_test_brokers`]: the broker's bootstrap servers;
//! * [`postgres_test_database`]: a fresh, empty PostgreSQL database;
//! * [`unavailable`]: the skip-or-panic both use, for other servers;
//! * [`guests`]: the JavaScript and Python toolchains and the components
//!   built with them.
//!
//! It does not depend on `sluice` (whose unit tests use it), so it holds
//! nothing typed by the host.

#![deny(missing_docs)]

pub mod guests;

/// Reports that a server is not reachable: a printed skip, or a panic when
/// `SLUICE_REQUIRE_SERVERS=1`.
pub fn unavailable(what: &str, at: &str, error: &str) {
    if std::env::var("SLUICE_REQUIRE_SERVERS").as_deref() == Ok("1") {
        panic!("{what} not reachable at {at} (SLUICE_REQUIRE_SERVERS=1): {error}");
    }
    eprintln!("skipping: {what} not reachable at {at}: {error}");
}

/// Default of `SLUICE_TEST_KAFKA_BROKERS`.
pub const DEFAULT_TEST_KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// The bootstrap servers of the Kafka-compatible broker for tests
/// (`SLUICE_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`), if one answers
/// on the first address. Tests make their own topic names unique.
pub async fn kafka_test_brokers() -> Option<String> {
    let brokers = std::env::var("SLUICE_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| DEFAULT_TEST_KAFKA_BROKERS.to_owned());
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    match tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::TcpStream::connect(&first),
    )
    .await
    {
        Ok(Ok(_)) => Some(brokers),
        Ok(Err(e)) => {
            unavailable("Kafka broker", &brokers, &e.to_string());
            None
        }
        Err(_) => {
            unavailable("Kafka broker", &brokers, "connection timed out");
            None
        }
    }
}

/// Server of [`postgres_test_database`] unless `SLUICE_TEST_POSTGRES_URL` names one.
const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Test databases older than this are dropped by [`postgres_test_database`].
const TEST_DATABASE_TTL_MS: i64 = 3_600_000;

/// For tests: the URL of a new, empty PostgreSQL database, or `None` when
/// no server is reachable (the test should then return early).
///
/// The server is `SLUICE_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`). Each call creates its own
/// database, `sluice_test_<hex>`, so tests do not see each other's data;
/// they are left behind, and the first call in a process drops those older
/// than an hour (best effort). An unreachable server is a skip, printed to
/// stderr, unless `SLUICE_REQUIRE_SERVERS=1` (as in CI): then it panics, so
/// that a missing server fails the run instead of skipping it.
pub async fn postgres_test_database() -> Option<String> {
    use sqlx::Connection as _;

    let url = std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned());
    let unavailable = |error: String| unavailable("PostgreSQL", &url, &error);
    let mut conn = match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => {
            unavailable(e.to_string());
            return None;
        }
    };
    // The name starts with the creation time (ms, 12 hex digits), so that
    // stale databases are recognised without server-side bookkeeping. Each
    // drop forces a checkpoint (seconds), so only the first call in a
    // process cleans up.
    static CLEANED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let now = chrono::Utc::now().timestamp_millis();
    let stale: Vec<String> = if CLEANED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        Vec::new()
    } else {
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sluice\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default()
    };
    for name in stale {
        let created = name
            .get("sluice_test_".len().."sluice_test_".len() + 12)
            .and_then(|hex| i64::from_str_radix(hex, 16).ok());
        if created.is_some_and(|created| now - created > TEST_DATABASE_TTL_MS) {
            // Fails harmlessly while someone is still connected to it.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\""
            )))
            .execute(&mut conn)
            .await;
        }
    }
    let name = format!("sluice_test_{now:012x}{:016x}", rand::random::<u64>());
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    if let Err(e) = created {
        unavailable(format!("cannot create database {name}: {e}"));
        return None;
    }
    let mut db_url = match reqwest::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            unavailable(format!("invalid URL: {e}"));
            return None;
        }
    };
    db_url.set_path(&format!("/{name}"));
    Some(db_url.into())
}
