//! `ws-bench`, the WebSocket side of `bench/run.sh`: a WebSocket echo API
//! to put a proxy in front of, and a load generator that keeps sockets
//! busy with one message in flight each and prints its result in wrk's
//! format (so the bench reads it like any wrk run).
//!
//! ```text
//! ws-bench echo PORT
//! ws-bench load URL ORIGIN COOKIE CONNECTIONS SECONDS MESSAGE_BYTES
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::Message;
use awc::ws::Frame;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ws-bench echo PORT | ws-bench load URL ORIGIN COOKIE CONNECTIONS SECONDS BYTES";
    match args.first().map(String::as_str) {
        Some("echo") => {
            let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect(usage);
            actix_rt::System::new()
                .block_on(echo(port))
                .expect("the echo API failed");
        }
        Some("load") if args.len() == 7 => {
            let number = |i: usize| -> u64 { args[i].parse().expect(usage) };
            let load = Load {
                url: args[1].clone(),
                origin: args[2].clone(),
                cookie: args[3].clone(),
                connections: number(4) as usize,
                duration: Duration::from_secs(number(5)),
                message: Bytes::from(vec![b'x'; number(6) as usize]),
            };
            actix_rt::System::new().block_on(load.run());
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// Echoes every text and binary message on any path, one worker.
async fn echo(port: u16) -> std::io::Result<()> {
    HttpServer::new(|| App::new().default_service(web::to(socket)))
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await
}

async fn socket(request: HttpRequest, body: web::Payload) -> HttpResponse {
    let Ok((response, mut session, stream)) = actix_ws::handle(&request, body) else {
        // A plain request (the bench's readiness check).
        return HttpResponse::Ok().body("ws-bench echo");
    };
    let mut stream = stream.max_frame_size(16 << 20);
    actix_rt::spawn(async move {
        while let Some(Ok(message)) = stream.recv().await {
            let sent = match message {
                Message::Text(text) => session.text(text).await,
                Message::Binary(bytes) => session.binary(bytes).await,
                Message::Ping(bytes) => session.pong(&bytes).await,
                Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    response
}

struct Load {
    url: String,
    origin: String,
    cookie: String,
    connections: usize,
    duration: Duration,
    message: Bytes,
}

impl Load {
    /// Opens every socket, then has each send a message and wait for its
    /// echo, over and over, until the time is up; prints wrk's summary.
    async fn run(self) {
        let latencies = Rc::new(RefCell::new(Vec::<u32>::with_capacity(1 << 20)));
        let mut sockets = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
            let mut request = client
                .ws(&self.url)
                .origin(self.origin.as_str())
                .max_frame_size(16 << 20);
            if !self.cookie.is_empty() {
                request = request.header("cookie", self.cookie.as_str());
            }
            let (_, socket) = request.connect().await.expect("handshake");
            sockets.push(socket);
        }
        let started = Instant::now();
        let deadline = started + self.duration;
        let errors = Rc::new(RefCell::new(0u64));
        let workers = sockets.into_iter().map(|mut socket| {
            let latencies = Rc::clone(&latencies);
            let errors = Rc::clone(&errors);
            let message = self.message.clone();
            async move {
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if socket
                        .send(awc::ws::Message::Binary(message.clone()))
                        .await
                        .is_err()
                    {
                        *errors.borrow_mut() += 1;
                        return;
                    }
                    match socket.next().await {
                        Some(Ok(Frame::Binary(echo))) if echo.len() == message.len() => {
                            let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX));
                            latencies.borrow_mut().push(micros as u32);
                        }
                        _ => {
                            *errors.borrow_mut() += 1;
                            return;
                        }
                    }
                }
                let _ = socket.send(awc::ws::Message::Close(None)).await;
            }
        });
        futures_util::future::join_all(workers).await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies = latencies.take();
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            f64::from(latencies.get(i).copied().unwrap_or(0)) / 1000.0
        };
        let count = latencies.len();
        // wrk's summary lines, as bench/run.sh reads them.
        println!("  Latency Distribution");
        println!("     50%   {:.3}ms", at(0.50));
        println!("     99%   {:.3}ms", at(0.99));
        println!("  {count} requests in {elapsed:.2}s, 0.00B read");
        let errors = errors.take();
        if errors > 0 {
            println!("  Socket errors: connect 0, read {errors}, write 0, timeout 0");
        }
        println!("Requests/sec: {:.2}", count as f64 / elapsed);
    }
}
