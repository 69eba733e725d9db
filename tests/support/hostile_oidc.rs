//! A hostile OpenID Provider for the OIDC tests (SPEC §16): a raw loopback
//! server that answers each path with whatever bytes the test sets (a
//! discovery document naming another issuer, a key set that is not JSON, a
//! token endpoint answering 500, …), or not at all, so tests can check that
//! tokenjar stays up, not ready, and fails logins cleanly. No Node.js needed.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A public ES256 key (its private half was thrown away): a key set that
/// parses, for scenes where only later steps misbehave. Nothing it would
/// verify is ever signed.
pub const USABLE_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"hostile-1","use":"sig","alg":"ES256","x":"t91CthvmpVJnPdFKsHUt1WKJydE651vJA_QGKEepIHg","y":"eHJ4uAQjh34ddqAdsXmEgjlzRdDgOk8pZ3zCmOwxzWw"}]}"#;

/// The canned answers by path (the query ignored) and how often each path
/// was asked for.
#[derive(Debug, Default)]
struct Table {
    answers: HashMap<String, Vec<u8>>,
    /// Paths whose connection is held open after the canned bytes (which
    /// may be none) until the client gives up: a provider that stalls.
    held: HashSet<String>,
    hits: HashMap<String, u64>,
}

/// The hostile provider; its listener thread stops on drop.
#[derive(Debug)]
pub struct HostileProvider {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
}

impl HostileProvider {
    /// Listens on a free loopback port; every path answers 404 until set.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let table = Arc::new(Mutex::new(Table::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&table), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                // One thread per connection: a slow reader never holds up
                // the next request.
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self { addr, table, stop }
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The issuer followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// Answers `path` with `status`, a content type and `body` from now on.
    pub fn set(&self, path: &str, status: u16, content_type: &str, body: &str) {
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        self.answer(path, response.into_bytes(), false);
    }

    /// Reads requests for `path` and never answers them, from now on.
    pub fn set_silent(&self, path: &str) {
        self.answer(path, Vec::new(), true);
    }

    /// Answers `path` with a 200 head announcing a JSON body that never
    /// comes, from now on.
    pub fn set_stalled(&self, path: &str) {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"access_token\":";
        self.answer(path, head.as_bytes().to_vec(), true);
    }

    fn answer(&self, path: &str, bytes: Vec<u8>, held: bool) {
        let mut table = self.table.lock().unwrap();
        table.answers.insert(path.to_owned(), bytes);
        if held {
            table.held.insert(path.to_owned());
        } else {
            table.held.remove(path);
        }
    }

    /// Answers `path` with a 302 to `location` from now on.
    pub fn set_redirect(&self, path: &str, location: &str) {
        let response = format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        self.answer(path, response.into_bytes(), false);
    }

    /// A discovery document naming `issuer` and this server's endpoints
    /// (`/authorize`, `/token`, `/jwks`), as JSON text.
    pub fn discovery_naming(&self, issuer: &str) -> String {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "jwks_uri": self.url("/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
        })
        .to_string()
    }

    /// How many requests asked for `path` so far.
    pub fn hits(&self, path: &str) -> u64 {
        self.table.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }
}

impl Drop for HostileProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request head (bodies are ignored: the answers do not depend on
/// them), counts its path and writes the canned answer.
fn serve(mut stream: TcpStream, table: &Mutex<Table>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split(' ').nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let (answer, held) = {
        let mut table = table.lock().unwrap();
        *table.hits.entry(path.clone()).or_default() += 1;
        (table.answers.get(&path).cloned(), table.held.contains(&path))
    };
    let answer = answer.unwrap_or_else(|| {
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
    });
    let _ = stream.write_all(&answer);
    if held {
        // Stalled: read until the client hangs up (its timeout), bounded
        // so a thread never outlives a forgotten test by much.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
        return;
    }
    // Drain what is left of the request (a token request's form body), so
    // closing does not reset the connection under the answer.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read(&mut chunk);
}
