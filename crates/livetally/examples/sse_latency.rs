//! The latency observer of the end-to-end harness (`benches/e2e/run.py`):
//! reads `/v1/live` as a dashboard would and writes, for every cumulative
//! rollup whose `last_event_ts` is newer than its stream's previous one, the
//! time it arrived.
//!
//! ```text
//! cargo run --release -p livetally --example sse_latency -- ADDR SECONDS OUT.tsv
//! ```
//!
//! It reads for SECONDS, writes `arrival_ms  stream_id  last_event_ts` lines
//! to OUT.tsv, and prints its counts as one JSON line on stdout. It is
//! compiled, not Python, so that the observer keeps up with tens of
//! thousands of rollups a second on a machine the measured pipeline already
//! keeps busy: an observer that falls behind adds its own backlog to every
//! figure it reports.

use std::collections::HashMap;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The fields of a rollup the observer needs.
#[derive(Deserialize)]
struct Rollup<'a> {
    kind: &'a str,
    #[serde(borrow)]
    stream_id: std::borrow::Cow<'a, str>,
    last_event_ts: i64,
}

#[derive(Default, serde::Serialize)]
struct Counts {
    events: u64,
    cumulative: u64,
    window: u64,
    not_newer: u64,
    skipped_by_server: u64,
    unparsed: u64,
    bytes: u64,
    samples: u64,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, seconds, out] = args.as_slice() else {
        anyhow::bail!("usage: sse_latency ADDR SECONDS OUT.tsv");
    };
    let seconds: f64 = seconds.parse()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut out = BufWriter::new(std::fs::File::create(out)?);
    writeln!(out, "arrival_ms\tstream_id\tlast_event_ts")?;
    let mut stream = connect(addr)?;
    // Connected: the harness waits for this line before it starts traffic.
    eprintln!("connected");
    let mut counts = Counts::default();
    let mut last_ts: HashMap<String, i64> = HashMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 21);
    let mut chunk = vec![0u8; 1 << 20];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        // Ends at the deadline even while no rollup comes.
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(e.into()),
        };
        let arrival = now_ms();
        if n == 0 {
            break;
        }
        counts.bytes += n as u64;
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(end) = event_end(&buf[start..]) {
            let event = &buf[start..start + end];
            start += end + 2;
            handle(event, arrival, &mut counts, &mut last_ts, &mut out)?;
        }
        buf.drain(..start);
    }
    out.flush()?;
    println!("{}", serde_json::to_string(&counts)?);
    Ok(())
}

fn handle(
    event: &[u8],
    arrival: f64,
    counts: &mut Counts,
    last_ts: &mut HashMap<String, i64>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let Some(comment) = event.strip_prefix(b":") {
        let text = String::from_utf8_lossy(comment);
        if let Some(n) = text.trim().strip_prefix("skipped ") {
            let n = n.split_whitespace().next().unwrap_or("0");
            counts.skipped_by_server += n.parse::<u64>().unwrap_or(0);
        }
        return Ok(());
    }
    counts.events += 1;
    let Some(data) = event
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"data: ".as_slice()))
    else {
        counts.unparsed += 1;
        return Ok(());
    };
    // `kind` is the first field: windows need no parsing.
    if data.starts_with(br#"{"kind":"window""#) {
        counts.window += 1;
        return Ok(());
    }
    let Ok(rollup) = serde_json::from_slice::<Rollup<'_>>(data) else {
        counts.unparsed += 1;
        return Ok(());
    };
    if rollup.kind == "window" {
        counts.window += 1;
        return Ok(());
    }
    counts.cumulative += 1;
    let newer = match last_ts.get_mut(rollup.stream_id.as_ref()) {
        Some(ts) if *ts >= rollup.last_event_ts => false,
        Some(ts) => {
            *ts = rollup.last_event_ts;
            true
        }
        None => {
            last_ts.insert(rollup.stream_id.to_string(), rollup.last_event_ts);
            true
        }
    };
    if !newer {
        counts.not_newer += 1;
        return Ok(());
    }
    counts.samples += 1;
    writeln!(
        out,
        "{arrival:.1}\t{}\t{}",
        rollup.stream_id, rollup.last_event_ts
    )?;
    Ok(())
}

/// Where the first event of `bytes` ends (its blank line).
fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|b| *b == b'\n') {
        let at = from + i;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Opens `/v1/live` over HTTP/1.0, so that the body is the bare event stream
/// until the server closes it (no chunked framing to undo), and returns the
/// connection positioned at the first byte of the body.
fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET /v1/live HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // The head, one byte at a time: it is short and read once.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            anyhow::bail!("/v1/live closed before its headers ended");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.0 200") && !head.starts_with("http/1.1 200") {
        anyhow::bail!("/v1/live answered: {}", head.lines().next().unwrap_or(""));
    }
    if head.contains("transfer-encoding: chunked") {
        anyhow::bail!("/v1/live answered HTTP/1.0 with chunked framing");
    }
    Ok(stream)
}
