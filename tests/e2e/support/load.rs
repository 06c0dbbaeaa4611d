//! A continuous request stream from concurrent HTTP/1.1 and HTTP/2
//! keep-alive clients, checking every response, for tests that change the
//! proxy under traffic.

use super::client::{self, Reply};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;

/// Requests running until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<(usize, Vec<String>)>>,
}

/// What the stream saw: responses that passed the check, and what went wrong with the others.
pub struct Outcome {
    /// Responses that passed.
    pub ok: usize,
    /// Failed requests and rejected responses, described.
    pub bad: Vec<String>,
}

impl Load {
    /// Starts `clients` clients (alternately HTTP/1.1 and HTTP/2) sending
    /// GET `url` in a loop; `check` says what is wrong with a response.
    pub fn start(url: String, clients: usize, check: fn(&Reply) -> Result<(), String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|i| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = if i % 2 == 0 { client::h1() } else { client::h2() };
                    let (mut ok, mut bad) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let req = client::request(http::Method::GET, &url, client::empty());
                        match client::send(&client, req).await.and_then(|r| check(&r)) {
                            Ok(()) => ok += 1,
                            Err(e) => bad.push(e),
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the stream and adds up what every client saw.
    pub async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcome = Outcome { ok: 0, bad: Vec::new() };
        for c in self.clients {
            let (ok, bad) = c.await.expect("client task");
            outcome.ok += ok;
            outcome.bad.extend(bad);
        }
        outcome
    }
}

/// The one value of header `name`, which must be one of `allowed`.
pub fn one_of(reply: &Reply, name: &str, allowed: &[&str]) -> Result<(), String> {
    let values: Vec<_> = reply.headers.get_all(name).iter().collect();
    match values[..] {
        [v] if reply.status == 200 && allowed.iter().any(|a| v == a) => Ok(()),
        _ => Err(format!("{} with {name}: {values:?}", reply.status)),
    }
}
