//! Test support: the servers that integration tests need (PostgreSQL,
//! a Kafka-compatible broker). A test asks for one and gets `None` when it
//! is not reachable; the test then skips, with the reason printed. With
//! `SLUICE_REQUIRE_SERVERS=1` (as `.ci/run` sets) a missing server panics
//! instead, so that CI can never pass by skipping.

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
