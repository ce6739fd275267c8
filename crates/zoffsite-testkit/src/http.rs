//! A real HTTP listener on 127.0.0.1 that records what it is sent (method,
//! path, body) and answers as told: the other end of `[notify] ping_url`
//! in the tests of `zoffsite-exec` and of the binary.
//!
//! Bounded, as a test server must be: it reads at most [`MAX_REQUEST`]
//! bytes of a request, holds a connection it never answers for at most
//! [`HOLD`], and stops accepting when dropped or after [`LIFETIME`].

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most bytes read of one request.
pub const MAX_REQUEST: usize = 1 << 20;
/// How long an [`Answer::Never`] connection is held open.
pub const HOLD: Duration = Duration::from_secs(60);
/// How long a recorder accepts connections at most.
pub const LIFETIME: Duration = Duration::from_secs(600);

/// How the listener answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `200 OK`, body `OK` (what healthchecks.io says).
    Ok,
    /// This status, with a `Location` for a 3xx.
    Status(u16),
    /// Reads the request and never answers (held for [`HOLD`]).
    Never,
}

/// One request, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The listener; see the module docs.
pub struct HttpRecorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HttpRecorder {
    /// Listens on a free port of 127.0.0.1.
    pub fn start(answer: Answer) -> HttpRecorder {
        HttpRecorder::on(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1"), answer)
    }

    /// Serves on `listener`, bound by the caller (e.g. inside another
    /// network namespace: the VM tests' source namespace).
    pub fn on(listener: TcpListener, answer: Answer) -> HttpRecorder {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stopped.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let reqs = reqs.clone();
                        std::thread::spawn(move || serve(conn, answer, &reqs));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpRecorder { addr, requests, stop }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// Waits up to `timeout` until `n` requests have arrived; returns them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let until = Instant::now() + timeout;
        while self.requests().len() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.requests()
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, answer: Answer, reqs: &Mutex<Vec<Request>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read) = conn.try_clone() else { return };
    let mut r = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    if r.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0usize);
    let mut body = vec![0u8; len.min(MAX_REQUEST)];
    let _ = r.read_exact(&mut body);
    reqs.lock().expect("not poisoned").push(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut w = conn;
    match answer {
        Answer::Never => std::thread::sleep(HOLD),
        Answer::Ok => {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
        Answer::Status(s) => {
            let _ = write!(
                w,
                "HTTP/1.1 {s} Status\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_method_path_and_body() {
        let s = HttpRecorder::start(Answer::Ok);
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"POST /a/fail HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        let r = s.wait_for(1, Duration::from_secs(5));
        assert_eq!((r[0].method.as_str(), r[0].path.as_str(), r[0].body.as_str()), ("POST", "/a/fail", "hello"));
        assert!(r[0].headers.contains(&("host".into(), "x".into())));
    }
}
