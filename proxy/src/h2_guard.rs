//! Counts the HTTP/2 control frames a client sends that wasp must answer
//! (SETTINGS and PING, each acknowledged): hyper/h2 answer every one and
//! offer no limit, so a client flooding them costs wasp CPU for as long as
//! it likes (CVE-2019-9512/9515). This read hook (see [`crate::io::Watched`])
//! looks at the frame headers
//! as bytes arrive (never at payloads), and when a client sends more than
//! `limit` such frames within a second it reports the connection abusive
//! and reads nothing more from it (so no more acknowledgements are made);
//! the connection is then ended (see [`crate::conn`]).
//!
//! A connection that does not open with the HTTP/2 preface is HTTP/1.1 and
//! is not looked at again.

use crate::io::ReadHook;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// Where the reader is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Matched this much of the preface so far.
    Preface(usize),
    /// Collecting a frame header.
    Header([u8; 9], usize),
    /// Skipping this much frame payload.
    Payload(usize),
    /// Not HTTP/2, or already reported.
    Off,
}

/// The control-frame budget of one connection.
pub struct ControlFrames {
    scan: Scan,
    limit: u32,
    window_start_ms: u64,
    in_window: u32,
}

impl ControlFrames {
    /// At most `limit` SETTINGS/PING frames a second.
    pub fn new(limit: u32) -> Self {
        ControlFrames { scan: Scan::Preface(0), limit, window_start_ms: 0, in_window: 0 }
    }

    /// Looks at `bytes` just read; `true` once the client is over its budget.
    pub fn over_budget(&mut self, mut bytes: &[u8], now_ms: u64) -> bool {
        while !bytes.is_empty() {
            match &mut self.scan {
                Scan::Off => return false,
                Scan::Preface(matched) => {
                    let n = bytes.len().min(PREFACE.len() - *matched);
                    if bytes[..n] != PREFACE[*matched..*matched + n] {
                        self.scan = Scan::Off;
                        return false;
                    }
                    *matched += n;
                    bytes = &bytes[n..];
                    if *matched == PREFACE.len() {
                        self.scan = Scan::Header([0; 9], 0);
                    }
                }
                Scan::Payload(left) => {
                    let n = bytes.len().min(*left);
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.scan = Scan::Header([0; 9], 0);
                    }
                }
                Scan::Header(head, have) => {
                    let n = bytes.len().min(9 - *have);
                    head[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < 9 {
                        continue;
                    }
                    let head = *head;
                    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                    let (kind, flags) = (head[3], head[4]);
                    self.scan = if len == 0 { Scan::Header([0; 9], 0) } else { Scan::Payload(len) };
                    if matches!(kind, SETTINGS | PING) && flags & ACK == 0 && self.count(now_ms) {
                        self.scan = Scan::Off;
                        return true;
                    }
                }
            }
        }
        false
    }

    fn count(&mut self, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
            (self.window_start_ms, self.in_window) = (now_ms, 0);
        }
        self.in_window += 1;
        self.in_window > self.limit
    }
}

/// The budget of one connection, and what to do once it is spent: read
/// nothing more (each frame read would be answered) and report.
pub struct Guard<F> {
    frames: ControlFrames,
    abusive: Option<F>,
}

impl<F: FnOnce()> Guard<F> {
    /// Counts against `frames`; `abusive` runs once when they are spent.
    pub fn new(frames: ControlFrames, abusive: F) -> Self {
        Guard { frames, abusive: Some(abusive) }
    }
}

impl<F: FnOnce()> ReadHook for Guard<F> {
    fn read(&mut self, bytes: &[u8]) -> bool {
        if !self.frames.over_budget(bytes, crate::io::clock_ms()) {
            return true;
        }
        if let Some(report) = self.abusive.take() {
            report();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn counts_settings_and_pings_but_not_acks_or_data_across_any_split() {
        let mut stream = PREFACE.to_vec();
        for _ in 0..3 {
            stream.extend(frame(SETTINGS, 0, &[0; 6]));
            stream.extend(frame(PING, 0, &[0; 8]));
            stream.extend(frame(PING, ACK, &[0; 8]));
            stream.extend(frame(0x0, 0, &[7; 100]));
        }
        for chunk in [1, 2, 5, 9, 24, 1000] {
            let mut six = ControlFrames::new(6);
            assert!(
                !stream.chunks(chunk).any(|c| six.over_budget(c, 0)),
                "6 are within a budget of 6 (chunks of {chunk})"
            );
            let mut five = ControlFrames::new(5);
            assert!(stream.chunks(chunk).any(|c| five.over_budget(c, 0)), "but not of 5 (chunks of {chunk})");
        }
    }

    #[test]
    fn the_budget_is_per_second_and_http1_is_not_looked_at() {
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(PING, 0, &[0; 8]));
        stream.extend(frame(PING, 0, &[0; 8]));
        let mut budget = ControlFrames::new(1);
        assert!(!budget.over_budget(&stream[..24 + 17], 0));
        assert!(!budget.over_budget(&stream[24 + 17..], 1500), "a new second");
        let mut h1 = ControlFrames::new(0);
        assert!(!h1.over_budget(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 0));
        assert!(!h1.over_budget(&frame(PING, 0, &[0; 8]), 0), "never looked at again");
    }
}
