//! A fault-injecting HTTP proxy in front of moto, for the failures moto cannot produce: an
//! AWS call that fails or never answers after an earlier call of the same step went through.
//! It is a stand-in for a broken network or service, written here because nothing real on this
//! machine fails on cue; every request it does not fault reaches moto unchanged.
//!
//! One request per connection (the response is sent with `Connection: close`), bodies framed
//! by Content-Length, as the AWS SDK sends them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What reached the proxy: enough to tell which AWS call it is.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// `X-Amz-Target` (JSON protocols: ECS, SSM), e.g. `AmazonSSM.PutParameter`.
    pub target: String,
}

impl Request {
    /// The call's name in the JSON protocols (`PutParameter`), or the REST path.
    pub fn is(&self, operation: &str) -> bool {
        self.target.rsplit('.').next() == Some(operation)
    }
}

/// What the proxy does with a request.
pub enum Fault {
    /// Passes it to moto.
    Forward,
    /// Answers it with this status and body, moto never sees it.
    Respond(u16, String),
    /// Never answers (the connection stays open until the proxy stops).
    Hang,
}

type Rule = Box<dyn Fn(&Request) -> Fault + Send + Sync>;

pub struct FaultProxy {
    pub url: String,
    rule: Arc<Mutex<Rule>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on a free loopback port that forwards everything to `upstream` (http://host:port).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(|_: &Request| Fault::Forward)));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (rule, stop) = (rule.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let (rule, stop, upstream) = (rule.clone(), stop.clone(), upstream.clone());
                    std::thread::spawn(move || {
                        let _ = serve(client, &upstream, &rule, &stop);
                    });
                }
            });
        }
        FaultProxy { url, rule, stop }
    }

    /// From now on, each request goes through `rule`.
    pub fn set(&self, rule: impl Fn(&Request) -> Fault + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }

    /// Everything is forwarded again.
    pub fn clear(&self) {
        self.set(|_| Fault::Forward);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    rule: &Mutex<Rule>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let header = |name: &str| {
        head.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut words = head[0].split_whitespace();
    let request = Request {
        method: words.next().unwrap_or_default().to_string(),
        path: words.next().unwrap_or_default().to_string(),
        target: header("x-amz-target").unwrap_or_default(),
    };
    let fault = (rule.lock().unwrap())(&request);
    let mut client = client;
    match fault {
        Fault::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        Fault::Respond(status, text) => {
            // The JSON protocols (ECS, SSM) name the call in X-Amz-Target; the rest are XML.
            let kind = if request.target.is_empty() {
                "text/xml"
            } else {
                "application/x-amz-json-1.1"
            };
            write!(
                client,
                "HTTP/1.1 {status} Fault\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )?;
            client.flush()
        }
        Fault::Forward => {
            let mut moto = TcpStream::connect(upstream)?;
            for line in &head {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("connection:") || line == "\r\n" {
                    continue;
                }
                moto.write_all(line.as_bytes())?;
            }
            moto.write_all(b"Connection: close\r\n\r\n")?;
            moto.write_all(&body)?;
            let mut answer = Vec::new();
            moto.read_to_end(&mut answer)?;
            // The same answer, said to close: the client does not reuse this connection.
            let split = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len(), |p| p + 2);
            let (head, rest) = answer.split_at(split);
            let head = String::from_utf8_lossy(head);
            for line in head.split_inclusive("\r\n") {
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    client.write_all(line.as_bytes())?;
                }
            }
            client.write_all(b"Connection: close\r\n")?;
            client.write_all(rest)?;
            client.flush()
        }
    }
}
