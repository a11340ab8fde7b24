//! Database URLs: parsed once, then used to connect (with TLS as `sslmode` says) and to give
//! `pg_dump`/`pg_restore` their connection through the environment, never on a command line.
//! The first stage of the database move: imports nothing of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the connection is protected, as libpq's `sslmode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    /// Chain and host name checked against a CA bundle (`verify-ca` is treated the same: stricter).
    VerifyFull,
}

impl TlsMode {
    fn libpq_name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed `postgres://` URL.
#[derive(Clone)]
pub struct DbUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub database: String,
    pub tls: TlsMode,
    ca_bundle: Option<PathBuf>,
    /// Where the connection really goes when a tunnel forwards `host:port` (a loopback
    /// address): TLS still checks the certificate for `host`, as libpq's `hostaddr` does.
    pub via: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbUrl({})", self.display())
    }
}

/// A host on this machine: `localhost`, a loopback address, or a Unix socket directory.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl DbUrl {
    /// Parses a URL; `ca_bundle` is used for `verify-full` when the URL names no `sslrootcert`.
    pub fn parse(text: &str, ca_bundle: Option<&Path>) -> Result<Self, String> {
        let url = Self::parse_shape(text, ca_bundle)?;
        if url.tls == TlsMode::VerifyFull && url.ca_bundle.is_none() {
            return Err("sslmode=verify-full needs a CA bundle: add sslrootcert=PATH to the URL or set the step's `ca_bundle` (for RDS: https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)".into());
        }
        Ok(url)
    }

    /// A URL's parts, without the checks that only matter when connecting.
    pub fn parse_unchecked(text: &str) -> Result<Self, String> {
        Self::parse_shape(text, None)
    }

    /// `user@host:port/database` of a URL, for plans and screens (no password, nothing checked
    /// that only matters when connecting).
    pub fn describe(text: &str) -> Option<String> {
        Self::parse_shape(text, None).ok().map(|u| u.display())
    }

    fn parse_shape(text: &str, ca_bundle: Option<&Path>) -> Result<Self, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| {
            format!(
                "not a database URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "a database URL starts with postgres:// (this one starts with {}://)",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the database URL names no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| "the database URL has a %-escape that is not UTF-8".to_string())
        };
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err("the database URL names no user".into());
        }
        let password = url.password().map(decode).transpose()?;
        let database = decode(url.path().trim_start_matches('/'))?;
        let database = if database.is_empty() {
            user.clone()
        } else {
            database
        };
        let mut tls = None;
        let mut ca = ca_bundle.map(Path::to_path_buf);
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    tls = Some(match value.as_ref() {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" | "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                            ))
                        }
                    })
                }
                "sslrootcert" => ca = Some(PathBuf::from(value.as_ref())),
                other => {
                    return Err(format!(
                        "the database URL has a parameter cutover does not handle: {other} (known: sslmode, sslrootcert)"
                    ))
                }
            }
        }
        // Without an sslmode, every host off this machine (Heroku's, RDS's) gets TLS required:
        // libpq's `prefer` would let a network attacker downgrade to plaintext. Only loopback
        // (a local cluster, a tunnel's near end) keeps `prefer`. An explicit sslmode wins.
        let tls = tls.unwrap_or(if is_loopback(&host) {
            TlsMode::Prefer
        } else {
            TlsMode::Require
        });
        Ok(DbUrl {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database,
            tls,
            ca_bundle: ca,
            via: None,
        })
    }

    /// `user@host:port/database`, with no password: what logs and errors show.
    pub fn display(&self) -> String {
        let mut shown = format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        );
        if let Some(via) = self.via {
            shown.push_str(&format!(" (through the tunnel on {via})"));
        }
        shown
    }

    /// The environment that points libpq tools (`pg_dump`, `pg_restore`, `psql`) at this database.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            (
                "PGPORT",
                self.via.map_or(self.port, |via| via.port()).to_string(),
            ),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.database.clone()),
            ("PGSSLMODE", self.tls.libpq_name().to_string()),
            ("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string()),
            ("PGAPPNAME", "cutover".to_string()),
        ];
        if let Some(password) = &self.password {
            env.push(("PGPASSWORD", password.clone()));
        }
        if let Some(ca) = &self.ca_bundle {
            env.push(("PGSSLROOTCERT", ca.display().to_string()));
        }
        if let Some(via) = self.via {
            // libpq connects to hostaddr and checks the certificate against PGHOST.
            env.push(("PGHOSTADDR", via.ip().to_string()));
        }
        env
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.via.map_or(self.port, |via| via.port()))
            .user(&self.user)
            .dbname(&self.database)
            .application_name("cutover")
            .connect_timeout(CONNECT_TIMEOUT)
            .ssl_mode(match self.tls {
                TlsMode::Disable => SslMode::Disable,
                TlsMode::Prefer => SslMode::Prefer,
                TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
            });
        if let Some(password) = &self.password {
            config.password(password);
        }
        if let Some(via) = self.via {
            config.hostaddr(via.ip());
        }
        config
    }

    /// Opens a session with the settings every comparison relies on (UTC, ISO dates, exact
    /// floats), so the same row prints the same text on both servers.
    pub async fn connect(&self) -> Result<Client, String> {
        let config = self.config();
        let client = if self.tls == TlsMode::Disable {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| explain_connect(&e, self))?;
            tokio::spawn(connection);
            client
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
            let (client, connection) = config
                .connect(tls)
                .await
                .map_err(|e| explain_connect(&e, self))?;
            tokio::spawn(connection);
            client
        };
        client
            .batch_execute(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
                 SET extra_float_digits = 1; SET bytea_output = 'hex'; SET statement_timeout = 0",
            )
            .await
            .map_err(|e| format!("{}: {}", self.display(), explain(&e)))?;
        Ok(client)
    }

    /// A session that reads every row or fails: row-level security off. Where a policy would
    /// filter what this role reads (a table with FORCE ROW LEVEL SECURITY it owns, or one it
    /// reads without owning it or BYPASSRLS), PostgreSQL then raises an error instead of
    /// returning fewer rows — what the copy, the verification and the guards count on.
    pub async fn connect_all_rows(&self) -> Result<Client, String> {
        let client = self.connect().await?;
        client
            .batch_execute("SET row_security = off")
            .await
            .map_err(|e| format!("{}: {}", self.display(), explain(&e)))?;
        Ok(client)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        tls_client_config(if self.tls == TlsMode::VerifyFull {
            Some(
                self.ca_bundle
                    .as_deref()
                    .ok_or("verify-full needs a CA bundle")?,
            )
        } else {
            None
        })
    }
}

/// A TLS client: with a CA bundle, the chain and the host name are verified (`verify-full`);
/// without, the connection is encrypted and the certificate not checked (`require`).
pub fn tls_client_config(ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if let Some(path) = ca_bundle {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("CA bundle {} holds no certificate", path.display()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        // sslmode=require/prefer: encrypted, the certificate not checked (libpq's meaning).
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(config)
}

/// Accepts any certificate but still checks the handshake signatures: what libpq's
/// `sslmode=require` promises (encryption, not identity).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A database error in words an operator can act on.
pub fn explain(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn explain_connect(error: &tokio_postgres::Error, url: &DbUrl) -> String {
    let target = url.display();
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        let hint = match code {
            "28P01" => " — the password is wrong, or it was rotated (Heroku rotates credentials: read the URL again)",
            "28000" => " — this user may not connect (pg_hba.conf / security rules)",
            "3D000" => " — the database does not exist",
            "53300" => " — the server has no free connection slots",
            _ => "",
        };
        return format!("cannot connect to {target}: {}{hint}", db.message());
    }
    let text = explain(error);
    let hint = if text.contains("Connection refused") {
        " — nothing listens there (is the database up, the port right, the security group open?)"
    } else if text.contains("timed out") || text.contains("timeout") {
        " — no answer (a firewall or security group dropping packets, or the wrong host)"
    } else if text.contains("failed to lookup") || text.contains("Name or service not known") {
        " — the host name does not resolve"
    } else if text.contains("does not support TLS") {
        " — the server does not offer TLS; use sslmode=disable only on a trusted network"
    } else {
        ""
    };
    format!("cannot connect to {target}: {text}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heroku_style_url_parses_and_keeps_the_password_out_of_display() {
        let url = DbUrl::parse(
            "postgres://u5er:p%40ss@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d9abc",
            None,
        )
        .unwrap();
        assert_eq!(url.user, "u5er");
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.database, "d9abc");
        // Heroku's host is off this machine: TLS required, never silently `prefer`.
        assert_eq!(url.tls, TlsMode::Require);
        assert_eq!(
            url.display(),
            "u5er@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d9abc"
        );
        assert!(!format!("{url:?}").contains("p@ss"));
        let env = url.libpq_env();
        assert!(env.contains(&("PGPASSWORD", "p@ss".to_string())));
    }

    #[test]
    fn only_loopback_hosts_default_to_prefer_and_an_explicit_sslmode_wins() {
        for (text, tls) in [
            ("postgres://u:p@localhost/db", TlsMode::Prefer),
            ("postgres://u:p@127.0.0.1:5433/db", TlsMode::Prefer),
            ("postgres://u:p@[::1]/db", TlsMode::Prefer),
            ("postgres://u:p@10.0.0.5/db", TlsMode::Require),
            ("postgres://u:p@db.internal/db", TlsMode::Require),
            (
                "postgres://u:p@db.internal/db?sslmode=prefer",
                TlsMode::Prefer,
            ),
            (
                "postgres://u:p@db.internal/db?sslmode=disable",
                TlsMode::Disable,
            ),
            (
                "postgres://u:p@localhost/db?sslmode=require",
                TlsMode::Require,
            ),
        ] {
            assert_eq!(DbUrl::parse(text, None).unwrap().tls, tls, "{text}");
        }
    }

    #[test]
    fn rds_hosts_default_to_required_tls() {
        let url = DbUrl::parse(
            "postgresql://app:pw@db.abc.us-east-1.rds.amazonaws.com/app",
            None,
        )
        .unwrap();
        assert_eq!(url.tls, TlsMode::Require);
        assert_eq!(url.port, 5432);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = DbUrl::parse("mysql://a:b@h/d", None).unwrap_err();
        assert!(err.contains("postgres://"), "{err}");
        let err = DbUrl::parse("postgres://a:b@h/d?sslmode=maybe", None).unwrap_err();
        assert!(err.contains("sslmode=maybe"), "{err}");
        let err = DbUrl::parse("postgres://a:b@h/d?sslmode=verify-full", None).unwrap_err();
        assert!(err.contains("CA bundle"), "{err}");
        let err = DbUrl::parse("postgres://a:b@h/d?pool=3", None).unwrap_err();
        assert!(err.contains("pool"), "{err}");
        let ok = DbUrl::parse(
            "postgres://a:b@h/d?sslmode=verify-full&sslrootcert=/tmp/ca.pem",
            None,
        )
        .unwrap();
        assert_eq!(ok.tls, TlsMode::VerifyFull);
    }
}
