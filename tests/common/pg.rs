//! PostgreSQL for the tests: the two clusters scripts/test starts (one plays Heroku, holding
//! the app-like `app_fixture` database; one plays RDS), and queries on any database by URL.

use super::var;

/// The clusters scripts/test started: superuser URLs (`CUTOVER_TEST_PG_SOURCE`, `…_TARGET`,
/// on the `postgres` database) and the directory of their PostgreSQL tools.
pub struct Clusters {
    pub source: String,
    pub target: String,
    pub bin: String,
}

impl Clusters {
    #[track_caller]
    pub fn from_env() -> Clusters {
        Clusters {
            source: var("CUTOVER_TEST_PG_SOURCE"),
            target: var("CUTOVER_TEST_PG_TARGET"),
            bin: var("CUTOVER_TEST_PG_BIN"),
        }
    }

    /// A source database `s_NAME` cloned from the fixture and an empty target database
    /// `t_NAME`, both dropped first: their URLs.
    pub fn databases(&self, name: &str) -> (String, String) {
        let (src, tgt) = (format!("s_{name}"), format!("t_{name}"));
        run_sql(
            &self.source,
            &format!("DROP DATABASE IF EXISTS {src} WITH (FORCE)"),
        );
        run_sql(
            &self.source,
            &format!("CREATE DATABASE {src} TEMPLATE app_fixture"),
        );
        run_sql(
            &self.target,
            &format!("DROP DATABASE IF EXISTS {tgt} WITH (FORCE)"),
        );
        run_sql(&self.target, &format!("CREATE DATABASE {tgt}"));
        (url_for(&self.source, &src), url_for(&self.target, &tgt))
    }

    /// PATH with the clusters' PostgreSQL tools first (pg_dump, pg_restore, psql of 16).
    pub fn path(&self) -> String {
        format!("{}:{}", self.bin, std::env::var("PATH").unwrap_or_default())
    }
}

/// `url` with another database name, its query (`?sslmode=…`) kept.
pub fn url_for(url: &str, database: &str) -> String {
    let (prefix, rest) = url
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let query = rest
        .split_once('?')
        .map_or(String::new(), |(_, q)| format!("?{q}"));
    format!("{prefix}/{database}{query}")
}

/// A client of the database at `url`, for use inside a runtime (its connection is a task of it).
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A client of the database at `url`, for `f`, on a runtime of its own.
pub fn with_client<T>(url: &str, f: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    super::moto::runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let handle = tokio::spawn(conn);
        let out = f(&client).await;
        drop(client);
        let _ = handle.await;
        out
    })
}

/// Statements on the database at `url`.
pub fn run_sql(url: &str, sql: &str) {
    with_client(url, async |c| {
        c.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    });
}

/// A query's first column, as text (empty for NULL), on the database at `url`.
pub fn scalar(url: &str, sql: &str) -> String {
    with_client(url, async |c| {
        c.query_one(&format!("SELECT ({sql})::text"), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get::<_, Option<String>>(0)
            .unwrap_or_default()
    })
}
