//! Raw HTTP/1.1 over a plain socket, for what reqwest will not send: chunked bodies, a lying
//! Content-Length, a body that stops half-way, a pause inside a request. Blocking: call it from
//! a `#[test]`, or from a multi-threaded runtime whose workers serve the app meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WEBHOOK: &str = "/api/ClerkWebhook";
/// A bound for what takes milliseconds, so that a hang fails instead of blocking the suite.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct RawResponse {
    pub status: u16,
    /// The response head, lower-cased.
    pub head: String,
    pub body: Value,
}

pub enum Framing {
    ContentLength,
    Chunked,
}

/// A webhook POST up to the body; `framing` holds the header lines that frame the body.
pub fn request_head(headers: &[(String, String)], framing: &str) -> Vec<u8> {
    let mut head = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: application/json\r\n{framing}"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A POST to the webhook with `body` framed as asked.
pub fn raw_post(
    address: &str,
    headers: &[(String, String)],
    body: &[u8],
    framing: Framing,
) -> Vec<u8> {
    match framing {
        Framing::ContentLength => {
            let mut request = request_head(headers, &format!("content-length: {}\r\n", body.len()));
            request.extend_from_slice(body);
            exchange(address, request)
        }
        Framing::Chunked => {
            let mut request = request_head(headers, "transfer-encoding: chunked\r\n");
            for chunk in body.chunks(64 * 1024) {
                request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
            exchange(address, request)
        }
    }
}

/// Writes `request` on a fresh connection while reading the answer until the server closes.
pub fn exchange(address: &str, request: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(PATIENCE)).unwrap();
    let sending = std::thread::spawn(move || {
        // The server may answer (413) and close before it has read all of it: not an error.
        let _ = writer.write_all(&request);
    });
    let received = read_until_closed(&mut stream);
    sending.join().unwrap();
    received
}

pub fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut received = Vec::new();
    // A reset after the answer (the server closed with our body unread) keeps what arrived.
    let _ = stream.read_to_end(&mut received);
    received
}

/// The final response in `bytes`, past any `100 Continue`.
pub fn parse_response(bytes: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response in {text:?}"));
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if status == 100 {
            rest = body;
            continue;
        }
        return RawResponse {
            status,
            head: head.to_ascii_lowercase(),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        };
    }
}

/// `GET /`, or `None` when nothing accepts connections on `address`.
pub fn get_root(address: &str) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some(parse_response(&read_until_closed(&mut stream)))
}

/// Polls until nothing accepts connections on `address` any more.
pub fn wait_until_refused(address: &str) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{address} still accepts connections"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A webhook delivery the handler has begun to read: it answered `100 Continue` and has half the
/// body, so the delivery is in flight inside the handler, not merely queued in the kernel.
pub struct DeliveryInFlight {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl DeliveryInFlight {
    pub fn begin(address: &str, headers: &[(String, String)], body: &[u8]) -> Self {
        let (first_half, second_half) = body.split_at(body.len() / 2);
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let head = request_head(
            headers,
            &format!("content-length: {}\r\nexpect: 100-continue\r\n", body.len()),
        );
        stream.write_all(&head).unwrap();
        // hyper says 100 Continue when the handler starts reading the body.
        let continue_line = b"HTTP/1.1 100 Continue\r\n\r\n";
        let mut received = vec![0; continue_line.len()];
        stream.read_exact(&mut received).unwrap();
        assert_eq!(received, continue_line);
        stream.write_all(first_half).unwrap();
        Self {
            stream,
            rest: second_half.to_vec(),
        }
    }

    /// Once the listener on `address` is closed (shutdown has begun), sends the rest of the body
    /// and reads the answer.
    pub fn finish_after_listener_closed(mut self, address: &str) -> RawResponse {
        wait_until_refused(address);
        self.stream.write_all(&self.rest).unwrap();
        parse_response(&read_until_closed(&mut self.stream))
    }
}
