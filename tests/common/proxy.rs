//! A test double in front of moto: an HTTP proxy that forwards each request, or answers it
//! itself (a 409, a 500), or never answers it — the failures moto cannot be asked to make (an
//! AWS call that fails, conflicts or hangs after an earlier call of the same step went
//! through). Every request it does not fault reaches moto unchanged; each request it saw is
//! kept, with what it did. Included with `#[path = "common/proxy.rs"] mod proxy;` by the test
//! binaries that use it.
#![allow(dead_code)] // not every binary uses every helper

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request as the proxy read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path and query, e.g. `/bucket/prefix/journal/0000000001.jsonl`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The S3 object key (path-style: after `/bucket/`), without the query.
    pub fn key(&self) -> &str {
        let path = self.path.split('?').next().unwrap_or_default();
        path.trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, key)| key)
    }

    pub fn is_put(&self) -> bool {
        self.method == "PUT"
    }

    /// Whether this is the call `operation` of a JSON protocol (ECS, SSM: `X-Amz-Target`).
    pub fn is(&self, operation: &str) -> bool {
        self.header("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            == Some(operation)
    }
}

/// What the proxy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Answers it with this status and an error of this code, in the protocol's own shape
    /// (JSON for the `X-Amz-Target` protocols, XML for the others).
    Fail {
        status: u16,
        code: &'static str,
    },
    /// Keeps the connection open and never answers.
    Hang,
}

type Rule = dyn Fn(&Request) -> Verdict + Send + Sync;

pub struct Proxy {
    pub url: String,
    rule: Arc<Mutex<Arc<Rule>>>,
    seen: Arc<Mutex<Vec<(Request, Verdict)>>>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`) deciding each request by `rule`.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Request) -> Verdict + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Mutex<Arc<Rule>>> = Arc::new(Mutex::new(Arc::new(rule)));
        {
            let (seen, rule) = (seen.clone(), rule.clone());
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let (upstream, seen, rule) = (upstream.clone(), seen.clone(), rule.clone());
                    std::thread::spawn(move || {
                        let _ = serve(client, &upstream, &seen, &rule);
                    });
                }
            });
        }
        Proxy {
            url: format!("http://127.0.0.1:{port}"),
            rule,
            seen,
        }
    }

    /// From now on, each request is decided by `rule`.
    pub fn set(&self, rule: impl Fn(&Request) -> Verdict + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Arc::new(rule);
    }

    /// Everything is forwarded again.
    pub fn clear(&self) {
        self.set(|_| Verdict::Forward);
    }

    /// Every request seen so far, with what was done with it.
    pub fn seen(&self) -> Vec<(Request, Verdict)> {
        self.seen.lock().unwrap().clone()
    }
}

/// An endpoint that accepts connections and never answers (a black-holed network).
pub fn silent_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in listener.incoming().flatten() {
            held.push(client);
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(Request, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    client.read_exact(&mut body)?;
    Ok(Some((
        Request {
            method,
            path,
            headers,
        },
        body,
    )))
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    seen: &Mutex<Vec<(Request, Verdict)>>,
    rule: &Mutex<Arc<Rule>>,
) -> std::io::Result<()> {
    while let Some((request, body)) = read_request(&mut client)? {
        let rule = rule.lock().unwrap().clone();
        let verdict = rule(&request);
        seen.lock()
            .unwrap()
            .push((request.clone(), verdict.clone()));
        match verdict {
            Verdict::Hang => {
                // Never answered: the connection stays open until the client gives up.
                let mut sink = [0u8; 1024];
                while client.read(&mut sink)? > 0 {}
                return Ok(());
            }
            Verdict::Fail { status, code } => {
                let message = "injected by the test's proxy";
                let (kind, body) = if request.header("x-amz-target").is_some() {
                    (
                        "application/x-amz-json-1.1",
                        format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}"),
                    )
                } else if request.path.starts_with("/2013-04-01/") {
                    // Route 53 wraps its errors.
                    (
                        "text/xml",
                        format!("<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>test</RequestId></ErrorResponse>"),
                    )
                } else {
                    (
                        "application/xml",
                        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>test</RequestId></Error>"),
                    )
                };
                let reason = match status {
                    409 => "Conflict",
                    500 => "Internal Server Error",
                    503 => "Service Unavailable",
                    _ => "Error",
                };
                client.write_all(
                    format!(
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )?;
            }
            Verdict::Forward => {
                let mut server = TcpStream::connect(upstream)?;
                let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
                for (k, v) in &request.headers {
                    if k.eq_ignore_ascii_case("connection") {
                        continue;
                    }
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("Connection: close\r\n\r\n");
                server.write_all(head.as_bytes())?;
                server.write_all(&body)?;
                let mut response = Vec::new();
                server.read_to_end(&mut response)?;
                client.write_all(&response)?;
            }
        }
    }
    Ok(())
}
