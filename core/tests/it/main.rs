//! Store tests: every repository function on SQLite and on PostgreSQL, each test
//! on a database of its own.

mod declarative;
mod store;

use tollgate_core::Store;
use tollgate_testkit::{Db, TestDb};

/// Runs `body` against a fresh, migrated store of the given kind.
pub async fn with_store<F, Fut>(kind: Db, body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let db = TestDb::new(kind).await;
    let store = Store::open(&db.url).await.expect("open store");
    body(store.clone()).await;
    store.close().await;
    db.cleanup().await;
}

/// Declares a test that runs on both databases.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                $crate::with_store(tollgate_testkit::Db::Sqlite, $body).await;
            }
            #[tokio::test]
            async fn postgres() {
                $crate::with_store(tollgate_testkit::Db::Postgres, $body).await;
            }
        }
    };
}
