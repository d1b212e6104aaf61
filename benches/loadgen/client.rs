//! The generator's WebSocket client: a Pusher protocol 7 socket that costs little per message,
//! so that the generator measures the server and not itself.
//!
//! The handshake and the few frames before a run are handled plainly. Deliveries are read in
//! bulk (one `read` takes every frame the kernel holds for the socket) and each frame is only
//! scanned for the two numbers the generator put in the payload, `seq` and `sent_ns`: no JSON
//! parse, no allocation per frame. Every socket keeps its own receipts behind its own lock
//! (taken once per read); one shared counter shows progress.
//!
//! A socket given keys (the `velo-encrypted` scenario) opens each sealed delivery before it
//! scans it, as a real client must: it finds the frame's channel among its keys, decodes the
//! base64 `nonce` and `ciphertext` of the `{"nonce","ciphertext"}` data into a buffer it keeps,
//! opens the secretbox in place and scans the plaintext. A delivery it cannot open is an error,
//! never a receipt, so the accounting stays exact. Sockets without keys take the plain path, whose
//! only extra cost is one branch per frame.
//!
//! A socket whose subscriptions are live (`Expect::live`, the `velo-live` scenario) also reads
//! the `seq` the server puts last in each event's data (`…,"seq":N}`) and checks that each
//! channel's events are numbered 1, 2, 3… with no gap, repeat or reordering: anything else is a
//! violation, counted, and the first few are printed (a violation is a server bug).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use velo_realtime::pusher::encryption::ChannelKey;

/// Nanoseconds since the generator's epoch: what payloads carry as `sent_ns`, and what a
/// receipt is compared with (one process, one clock).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The largest frame a socket accepts; deliveries are far smaller.
const MAX_FRAME: usize = 1 << 20;
/// Initial read buffer per socket (it grows for a larger frame).
const READ_BUFFER: usize = 4096;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A client WebSocket after the handshake.
pub struct Socket {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already parsed.
    parsed: usize,
    /// The keys of the socket's encrypted channels, if it has any.
    opener: Option<Opener>,
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Socket {
    /// Connects from `source` (a loopback address) and upgrades `path` to a WebSocket.
    pub async fn connect(server: SocketAddr, source: Ipv4Addr, path: &str) -> io::Result<Socket> {
        let tcp = TcpSocket::new_v4()?;
        defer_port_choice(&tcp)?;
        tcp.bind((source, 0).into())?;
        let mut stream = tcp.connect(server).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(READ_BUFFER);
        let head_end = loop {
            if let Some(at) = memmem::find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if buffer.len() > 16 * 1024 || read_more(&mut stream, &mut buffer).await? == 0 {
                return Err(protocol_error("no complete upgrade response"));
            }
        };
        if !buffer.starts_with(b"HTTP/1.1 101") {
            let status = String::from_utf8_lossy(&buffer[..head_end.min(64)]).into_owned();
            return Err(protocol_error(format!("upgrade refused: {status}")));
        }
        Ok(Socket {
            stream,
            buffer,
            parsed: head_end,
            opener: None,
        })
    }

    /// Opens the socket's sealed deliveries with `opener` (its encrypted channels' keys).
    pub fn open_with(&mut self, opener: Opener) {
        self.opener = Some(opener);
    }

    /// Sends a text frame (masked, as a client must).
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.stream
            .write_all(&client_frame(OP_TEXT, text.as_bytes()))
            .await
    }

    /// The next text message, answering pings on the way; `None` once the server closed.
    /// For the frames before a run (it allocates).
    pub async fn next_text(&mut self) -> io::Result<Option<String>> {
        loop {
            while let Some((opcode, payload)) = self.next_frame()? {
                match opcode {
                    OP_TEXT => {
                        return Ok(Some(String::from_utf8_lossy(&payload).into_owned()));
                    }
                    OP_PING => {
                        self.stream
                            .write_all(&client_frame(OP_PONG, &payload))
                            .await?
                    }
                    OP_CLOSE => return Ok(None),
                    _ => {}
                }
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Takes one complete frame from the buffer: opcode and payload (copied: setup only).
    fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        Ok(parse_frame(&self.buffer[self.parsed..])?.map(|frame| {
            let payload = self.buffer[self.parsed..][frame.payload.clone()].to_vec();
            self.parsed += frame.length;
            (frame.opcode, payload)
        }))
    }

    /// Drops parsed bytes and reads whatever the kernel holds; 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buffer.drain(..self.parsed);
        self.parsed = 0;
        read_more(&mut self.stream, &mut self.buffer).await
    }

    /// Reads deliveries into `receipts` until the server closes or the task is aborted.
    /// Signals `ready` once `subscriptions` subscriptions succeeded.
    pub async fn receive(
        mut self,
        mut subscriptions: usize,
        ready: tokio::sync::oneshot::Sender<()>,
        receipts: Arc<Mutex<Receipts>>,
        progress: Arc<Progress>,
    ) {
        let mut ready = Some(ready);
        let signal = |ready: &mut Option<tokio::sync::oneshot::Sender<()>>| {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        };
        if subscriptions == 0 {
            signal(&mut ready);
        }
        let markers = Markers::new();
        let mut opener = self.opener.take();
        loop {
            let mut pongs = Vec::new();
            let mut counted = 0;
            let mut ended = false;
            {
                let arrived = now_ns();
                let base = progress.base.load(Ordering::Relaxed);
                let mut receipts = receipts.lock().unwrap_or_else(|e| e.into_inner());
                while !ended {
                    let frame = match parse_frame(&self.buffer[self.parsed..]) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(error) => {
                            eprintln!("socket dropped: {error}");
                            receipts.errors += 1;
                            ended = true;
                            continue;
                        }
                    };
                    let start = self.parsed;
                    self.parsed += frame.length;
                    let payload = &self.buffer[start..][frame.payload];
                    match frame.opcode {
                        OP_TEXT if subscriptions > 0 && markers.succeeded(payload) => {
                            subscriptions -= 1;
                            if subscriptions == 0 {
                                signal(&mut ready);
                            }
                        }
                        OP_TEXT => {
                            let live = receipts.expect.live;
                            // The receipt, and the live `seq` where the socket checks them.
                            let (receipt, numbered) =
                                match opener.as_mut().map(|opener| opener.open(payload)) {
                                    None | Some(Opened::Plain) => (
                                        markers.receipt(payload),
                                        live.then(|| markers.live_seq(payload)).flatten(),
                                    ),
                                    Some(Opened::Sealed(plaintext)) => {
                                        match markers.opened_receipt(plaintext) {
                                            Some(receipt) => (
                                                Some(receipt),
                                                live.then(|| markers.opened_live_seq(plaintext))
                                                    .flatten(),
                                            ),
                                            // A sealed event without our numbers (`ended`).
                                            None => continue,
                                        }
                                    }
                                    Some(Opened::Broken(why)) => {
                                        if receipts.errors == 0 {
                                            eprintln!("a sealed delivery did not open: {why}");
                                        }
                                        receipts.errors += 1;
                                        continue;
                                    }
                                };
                            if live && receipt.is_some() {
                                receipts.check_live(markers.channel(payload), numbered);
                            }
                            match receipt {
                                Some((seq, sent_ns)) if seq >= base => {
                                    let latency = arrived.saturating_sub(sent_ns);
                                    counted +=
                                        u64::from(receipts.record(seq - base, latency, arrived));
                                }
                                Some(_) => {}
                                // The server's keep-alive: a socket that does not answer is
                                // closed (4201), as a real client's would be.
                                None if markers.ping(payload) => {
                                    pongs.push(client_frame(OP_TEXT, PUSHER_PONG.as_bytes()))
                                }
                                None if markers.error(payload) => receipts.errors += 1,
                                None => {}
                            }
                        }
                        OP_PING => pongs.push(client_frame(OP_PONG, payload)),
                        OP_CLOSE => ended = true,
                        _ => {}
                    }
                }
            }
            if counted > 0 {
                progress.delivered.fetch_add(counted, Ordering::Relaxed);
            }
            if ended {
                return;
            }
            for pong in pongs {
                if self.stream.write_all(&pong).await.is_err() {
                    return;
                }
            }
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Lets `connect` choose the source port for its destination (`IP_BIND_ADDRESS_NO_PORT`):
/// a socket bound to a source address then does not hold a port of its own, and ports left in
/// TIME_WAIT by an earlier run can be reused.
fn defer_port_choice(socket: &TcpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open for the call, and the option's value is the `c_int` the
    // kernel reads.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads what is available into the spare capacity of `buffer` (growing it when full).
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    if buffer.capacity() - buffer.len() < READ_BUFFER / 2 {
        buffer.reserve(READ_BUFFER);
    }
    stream.read_buf(buffer).await
}

/// One frame's place in a buffer.
struct FrameAt {
    opcode: u8,
    payload: std::ops::Range<usize>,
    length: usize,
}

/// Parses the frame at the start of `data`: `None` until it is complete. Server frames are
/// unmasked; fragmented messages are not expected from a Pusher server (each fragment would be
/// scanned on its own).
fn parse_frame(data: &[u8]) -> io::Result<Option<FrameAt>> {
    if data.len() < 2 {
        return Ok(None);
    }
    if data[1] & 0x80 != 0 {
        return Err(protocol_error("a server frame was masked"));
    }
    let (length, header) = match data[1] & 0x7f {
        126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
        127 if data.len() >= 10 => (
            u64::from_be_bytes(data[2..10].try_into().expect("8 bytes")) as usize,
            10,
        ),
        126 | 127 => return Ok(None),
        short => (short as usize, 2),
    };
    if length > MAX_FRAME {
        return Err(protocol_error(format!("a frame of {length} bytes")));
    }
    if data.len() < header + length {
        return Ok(None);
    }
    Ok(Some(FrameAt {
        opcode: data[0] & 0x0f,
        payload: header..header + length,
        length: header + length,
    }))
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        short @ 0..126 => frame.push(0x80 | short as u8),
        medium @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// The substrings a socket looks for, searchers built once.
struct Markers {
    seq: memmem::Finder<'static>,
    sent: memmem::Finder<'static>,
    /// The same in an opened (plain JSON) payload.
    opened_seq: memmem::Finder<'static>,
    opened_sent: memmem::Finder<'static>,
    succeeded: memmem::Finder<'static>,
    channel: memmem::Finder<'static>,
    error: memmem::Finder<'static>,
    ping: memmem::Finder<'static>,
}

/// The answer to the server's `pusher:ping`.
const PUSHER_PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

impl Markers {
    fn new() -> Self {
        Self {
            // Inside the frame the payload is a JSON string, so its quotes are escaped.
            seq: memmem::Finder::new(br#"seq\":"#),
            sent: memmem::Finder::new(br#"sent_ns\":"#),
            opened_seq: memmem::Finder::new(br#""seq":"#),
            opened_sent: memmem::Finder::new(br#""sent_ns":"#),
            succeeded: memmem::Finder::new(b"subscription_succeeded"),
            channel: memmem::Finder::new(br#""channel":""#),
            error: memmem::Finder::new(b"error"),
            ping: memmem::Finder::new(b"\"pusher:ping\""),
        }
    }

    fn succeeded(&self, frame: &[u8]) -> bool {
        self.succeeded.find(frame).is_some()
    }

    fn ping(&self, frame: &[u8]) -> bool {
        self.ping.find(frame).is_some()
    }

    /// `pusher:error` or `pusher:subscription_error`.
    fn error(&self, frame: &[u8]) -> bool {
        self.error.find(frame).is_some()
    }

    /// The `seq` and `sent_ns` a delivery carries.
    fn receipt(&self, frame: &[u8]) -> Option<(u64, u64)> {
        Self::numbers(&self.seq, &self.sent, frame)
    }

    /// The channel a frame names (empty without one).
    fn channel<'f>(&self, frame: &'f [u8]) -> &'f [u8] {
        self.channel
            .find(frame)
            .and_then(|at| {
                let at = at + self.channel.needle().len();
                let len = memchr::memchr(b'"', &frame[at..])?;
                Some(&frame[at..at + len])
            })
            .unwrap_or_default()
    }

    /// A live event's own `seq`, the last key of its data: a plain frame ends with
    /// `,\"seq\":N}"}` (the record's fields, a `seq` among them, come before it).
    fn live_seq(&self, frame: &[u8]) -> Option<u64> {
        trailing_number(frame, br#",\"seq\":"#, br#"}"}"#)
    }

    /// The same in an opened sealed delivery, which ends with `,"seq":N}`.
    fn opened_live_seq(&self, plaintext: &[u8]) -> Option<u64> {
        trailing_number(plaintext, br#","seq":"#, b"}")
    }

    /// The `seq` and `sent_ns` an opened sealed delivery carries.
    fn opened_receipt(&self, plaintext: &[u8]) -> Option<(u64, u64)> {
        Self::numbers(&self.opened_seq, &self.opened_sent, plaintext)
    }

    fn numbers(seq: &memmem::Finder, sent: &memmem::Finder, frame: &[u8]) -> Option<(u64, u64)> {
        let number = |finder: &memmem::Finder, frame: &[u8]| {
            let at = finder.find(frame)? + finder.needle().len();
            let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit());
            let mut value = 0u64;
            let mut any = false;
            for digit in digits {
                value = value
                    .checked_mul(10)?
                    .checked_add(u64::from(digit - b'0'))?;
                any = true;
            }
            any.then_some(value)
        };
        Some((number(seq, frame)?, number(sent, frame)?))
    }
}

/// The number between `marker` and `suffix` at the end of `text`.
fn trailing_number(text: &[u8], marker: &[u8], suffix: &[u8]) -> Option<u64> {
    let text = text.strip_suffix(suffix)?;
    let digits = text.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, number) = text.split_at(text.len() - digits);
    if digits == 0 || digits > 19 || !head.ends_with(marker) {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// What [`Opener::open`] made of a text frame.
enum Opened<'a> {
    /// Not sealed: scan the frame itself.
    Plain,
    /// The opened secretbox: the event's payload as plain JSON.
    Sealed(&'a [u8]),
    /// Sealed, but it could not be opened: why.
    Broken(&'static str),
}

/// The key of an encrypted channel as its subscriber gets it (the authorization's
/// `shared_secret`): SHA-256(channel name ‖ master key).
pub fn channel_key(channel: &str, master_key: &[u8; 32]) -> [u8; 32] {
    let secret = ChannelKey::derive(channel, master_key).shared_secret();
    base64::engine::general_purpose::STANDARD
        .decode(secret)
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}

/// Opens the sealed deliveries of one socket's encrypted channels.
pub struct Opener {
    /// Each encrypted channel's name and cipher (a socket holds a few: a linear search).
    keys: Vec<(Box<[u8]>, XSalsa20Poly1305)>,
    channel: memmem::Finder<'static>,
    nonce: memmem::Finder<'static>,
    ciphertext: memmem::Finder<'static>,
    /// The decoded ciphertext, then the plaintext: kept between frames.
    buffer: Vec<u8>,
}

impl Opener {
    /// An opener for these channels and their 32-byte keys (what the channel authorization's
    /// `shared_secret` holds).
    pub fn new(keys: impl IntoIterator<Item = (String, [u8; 32])>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|(channel, key)| {
                    let cipher = XSalsa20Poly1305::new(&key.into());
                    (channel.into_bytes().into_boxed_slice(), cipher)
                })
                .collect(),
            channel: memmem::Finder::new(br#""channel":""#),
            // Inside the frame the data is a JSON string, so its quotes are escaped.
            nonce: memmem::Finder::new(br#"{\"nonce\":\""#),
            ciphertext: memmem::Finder::new(br#"\",\"ciphertext\":\""#),
            buffer: Vec::with_capacity(512),
        }
    }

    /// Opens `frame` if its data is sealed, `{"nonce":b64,"ciphertext":b64}` (the order the
    /// server writes).
    fn open(&mut self, frame: &[u8]) -> Opened<'_> {
        let Some(nonce_at) = self.nonce.find(frame) else {
            return Opened::Plain;
        };
        let nonce_at = nonce_at + self.nonce.needle().len();
        let Some(ciphertext_at) = self.ciphertext.find(&frame[nonce_at..]) else {
            return Opened::Plain;
        };
        let nonce_b64 = &frame[nonce_at..nonce_at + ciphertext_at];
        let ciphertext_at = nonce_at + ciphertext_at + self.ciphertext.needle().len();
        let Some(ciphertext_len) = memchr::memchr(b'\\', &frame[ciphertext_at..]) else {
            return Opened::Broken("no end to the ciphertext");
        };
        let ciphertext_b64 = &frame[ciphertext_at..ciphertext_at + ciphertext_len];
        let Some(channel) = self.channel.find(frame).and_then(|at| {
            let at = at + self.channel.needle().len();
            let len = memchr::memchr(b'"', &frame[at..])?;
            Some(&frame[at..at + len])
        }) else {
            return Opened::Broken("no channel");
        };
        let Some((_, cipher)) = self.keys.iter().find(|(name, _)| **name == *channel) else {
            return Opened::Broken("no key for its channel");
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut nonce = [0u8; 24];
        if !matches!(b64.decode_slice(nonce_b64, &mut nonce), Ok(24)) {
            return Opened::Broken("a bad nonce");
        }
        self.buffer.clear();
        if b64.decode_vec(ciphertext_b64, &mut self.buffer).is_err() {
            return Opened::Broken("bad base64 in the ciphertext");
        }
        match cipher.decrypt_in_place(Nonce::from_slice(&nonce), b"", &mut self.buffer) {
            Ok(()) => Opened::Sealed(&self.buffer),
            Err(_) => Opened::Broken("the secretbox did not open (wrong key, or altered)"),
        }
    }
}

/// Progress shared by every socket of a run.
#[derive(Default)]
pub struct Progress {
    /// Deliveries counted in the current run.
    pub delivered: AtomicU64,
    /// The first sequence number of the current run; older ones are stale and ignored.
    pub base: AtomicU64,
}

/// Which deliveries a socket expects.
#[derive(Clone, Copy)]
pub struct Expect {
    /// Copies of each event (one per subscribed channel it reaches).
    pub copies: u8,
    /// `Some((index, modulus))`: only events with `seq % modulus == index` are for this
    /// socket (the velo scenario's owners); anything else is a misdelivery.
    pub owner: Option<(u64, u64)>,
    /// Its subscriptions are live: each channel's events carry `seq` 1, 2, 3… (checked).
    pub live: bool,
}

/// Live `seq` violations printed per process (the rest are only counted).
const SHOWN_VIOLATIONS: u64 = 10;
static VIOLATIONS_SHOWN: AtomicU64 = AtomicU64::new(0);

/// One socket's receipts in the current run.
pub struct Receipts {
    expect: Expect,
    /// Copies received per sequence number (relative to the run's base).
    counts: Vec<u8>,
    latencies_us: Vec<u32>,
    duplicates: u64,
    misdelivered: u64,
    errors: u64,
    last_ns: u64,
    /// Each live channel's last `seq` (kept across runs: the server numbers them).
    live_seqs: Vec<(Box<[u8]>, u64)>,
    /// Live events whose `seq` was missing or not one more than their channel's last.
    seq_violations: u64,
}

impl Receipts {
    pub fn new(expect: Expect) -> Self {
        Self {
            expect,
            counts: Vec::new(),
            latencies_us: Vec::new(),
            duplicates: 0,
            misdelivered: 0,
            errors: 0,
            last_ns: 0,
            live_seqs: Vec::new(),
            seq_violations: 0,
        }
    }

    /// Checks a live event's `seq` (`None`: it carried none) against its channel's last.
    fn check_live(&mut self, channel: &[u8], seq: Option<u64>) {
        let at = match self
            .live_seqs
            .iter()
            .position(|(name, _)| **name == *channel)
        {
            Some(at) => at,
            None => {
                self.live_seqs.push((channel.into(), 0));
                self.live_seqs.len() - 1
            }
        };
        let last = &mut self.live_seqs[at].1;
        let expected = *last + 1;
        if seq == Some(expected) {
            *last = expected;
            return;
        }
        self.seq_violations += 1;
        if VIOLATIONS_SHOWN.fetch_add(1, Ordering::Relaxed) < SHOWN_VIOLATIONS {
            let channel = String::from_utf8_lossy(channel);
            match seq {
                Some(seq) => eprintln!("!!! live seq violation on {channel}: {seq} after {last}"),
                None => eprintln!(
                    "!!! live seq violation on {channel}: an event without seq after {last}"
                ),
            }
        }
        // Follow the server from here, so one gap counts once.
        if let Some(seq) = seq {
            *last = seq;
        }
    }

    /// Records a delivery; true when it counts (not a duplicate, not someone else's).
    fn record(&mut self, seq: u64, latency_ns: u64, arrived_ns: u64) -> bool {
        if let Some((index, modulus)) = self.expect.owner
            && seq % modulus != index
        {
            self.misdelivered += 1;
            return false;
        }
        let Ok(slot) = usize::try_from(seq) else {
            return false;
        };
        if slot >= self.counts.len() {
            self.counts.resize(slot + 1, 0);
        }
        if self.counts[slot] >= self.expect.copies {
            self.duplicates += 1;
            return false;
        }
        self.counts[slot] += 1;
        self.latencies_us
            .push(u32::try_from(latency_ns / 1_000).unwrap_or(u32::MAX));
        self.last_ns = self.last_ns.max(arrived_ns);
        true
    }

    fn clear(&mut self) {
        let live_seqs = std::mem::take(&mut self.live_seqs);
        *self = Receipts::new(self.expect);
        self.live_seqs = live_seqs;
    }
}

/// What a run's sockets received, summed.
#[derive(Default)]
pub struct Tally {
    pub latencies_us: Vec<u32>,
    pub duplicates: u64,
    pub misdelivered: u64,
    pub errors: u64,
    /// Live events out of their channel's `seq` order, or without one.
    pub seq_violations: u64,
    /// The last counted arrival (`now_ns` time).
    pub last_ns: u64,
}

/// The client sockets of a scenario.
pub struct Clients {
    receipts: Vec<Arc<Mutex<Receipts>>>,
    progress: Arc<Progress>,
    tasks: Vec<JoinHandle<()>>,
}

impl Clients {
    pub fn new() -> Self {
        Self {
            receipts: Vec::new(),
            progress: Arc::default(),
            tasks: Vec::new(),
        }
    }

    /// Starts reading `socket`, which has `subscriptions` subscriptions under way; the
    /// returned receiver fires once they all succeeded.
    pub fn add(
        &mut self,
        socket: Socket,
        subscriptions: usize,
        expect: Expect,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let receipts = Arc::new(Mutex::new(Receipts::new(expect)));
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        self.tasks.push(tokio::spawn(socket.receive(
            subscriptions,
            ready,
            receipts.clone(),
            self.progress.clone(),
        )));
        self.receipts.push(receipts);
        is_ready
    }

    pub fn len(&self) -> usize {
        self.receipts.len()
    }

    /// Starts a run whose sequence numbers begin at `base`: receipts are cleared.
    pub fn begin(&self, base: u64) {
        self.progress.base.store(base, Ordering::Relaxed);
        for receipts in &self.receipts {
            receipts.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.progress.delivered.store(0, Ordering::Relaxed);
    }

    /// Waits until `expected` deliveries were counted, or nothing arrived for `patience`;
    /// shows progress on long waits.
    pub async fn wait(&self, expected: u64, patience: Duration) {
        let started = Instant::now();
        let mut last = (0, Instant::now());
        let mut shown = Instant::now();
        loop {
            let delivered = self.progress.delivered.load(Ordering::Relaxed);
            if delivered >= expected {
                break;
            }
            if delivered != last.0 {
                last = (delivered, Instant::now());
            } else if last.1.elapsed() > patience {
                break;
            }
            if started.elapsed() > Duration::from_secs(3)
                && shown.elapsed() > Duration::from_secs(2)
            {
                eprintln!("  … {delivered} of {expected} deliveries");
                shown = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sums every socket's receipts.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for receipts in &self.receipts {
            let receipts = receipts.lock().unwrap_or_else(|e| e.into_inner());
            tally.latencies_us.extend_from_slice(&receipts.latencies_us);
            tally.duplicates += receipts.duplicates;
            tally.misdelivered += receipts.misdelivered;
            tally.errors += receipts.errors;
            tally.seq_violations += receipts.seq_violations;
            tally.last_ns = tally.last_ns.max(receipts.last_ns);
        }
        tally
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Checks of the wire parsing and the bookkeeping, run by `cargo test` (which runs this
/// harness-less bench without `--bench`).
pub fn self_check() {
    frames_parse_at_every_length_form();
    receipts_are_scanned_from_escaped_payloads();
    sealed_deliveries_are_opened_then_scanned();
    duplicates_and_misdeliveries_do_not_count();
    live_seqs_are_read_and_checked_per_channel();
}

fn frames_parse_at_every_length_form() {
    for length in [0, 125, 126, 65_535, 65_536] {
        let mut data = vec![0x81];
        match length {
            0..126 => data.push(length as u8),
            126..=0xffff => {
                data.push(126);
                data.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                data.push(127);
                data.extend_from_slice(&(length as u64).to_be_bytes());
            }
        }
        data.resize(data.len() + length, b'x');
        let frame = parse_frame(&data).unwrap().expect("complete");
        assert_eq!((frame.opcode, frame.payload.len()), (OP_TEXT, length));
        assert_eq!(frame.length, data.len());
        assert!(parse_frame(&data[..data.len() - 1]).unwrap().is_none());
    }
}

fn receipts_are_scanned_from_escaped_payloads() {
    let markers = Markers::new();
    let frame = br#"{"event":"tick","channel":"c","data":"{\"seq\":42,\"sent_ns\":123456,\"payload\":\"x\"}"}"#;
    assert_eq!(markers.receipt(frame), Some((42, 123_456)));
    assert_eq!(
        markers.receipt(br#"{"event":"pusher:pong","data":{}}"#),
        None
    );
    assert!(markers.ping(br#"{"event":"pusher:ping","data":"{}"}"#));
    assert!(!markers.ping(br#"{"event":"pusher:pong","data":"{}"}"#));
}

/// Frames made by the server's own code (`EventData::frame_for`), sealed as it seals them.
fn sealed_deliveries_are_opened_then_scanned() {
    use velo_realtime::engine::events::{Action, Destination, EventData, EventNames};
    let master = [9u8; 32];
    let sealed_for = |event: &EventData, channel: &str| {
        let destination = Destination {
            channel: channel.into(),
            key: Some(ChannelKey::derive(channel, &master)),
        };
        event.frame_for(&destination).as_str().as_bytes().to_vec()
    };
    let record = serde_json::json!({"id": "r1", "seq": 42, "sent_ns": 123_456, "owner": "u1"});
    let event = EventData::new(
        Action::Created,
        record.as_object().unwrap(),
        EventNames::Actions,
    );
    let channel = "private-encrypted-velo.realtime.0f0e";
    let frame = sealed_for(&event, channel);
    let markers = Markers::new();
    assert_eq!(
        markers.receipt(&frame),
        None,
        "nothing to read before it is opened"
    );
    let other = "private-encrypted-velo.realtime.1d1c";
    let mut opener = Opener::new([
        (other.to_owned(), channel_key(other, &master)),
        (channel.to_owned(), channel_key(channel, &master)),
    ]);
    let Opened::Sealed(plaintext) = opener.open(&frame) else {
        panic!("a sealed delivery opens with its channel's key");
    };
    assert_eq!(markers.opened_receipt(plaintext), Some((42, 123_456)));
    // Plain frames pass through to the plain scan.
    let plain = event.frame("private-velo.realtime.0f0e");
    assert!(matches!(opener.open(plain.as_bytes()), Opened::Plain));
    assert!(matches!(
        opener.open(br#"{"event":"pusher:ping","data":{}}"#),
        Opened::Plain
    ));
    // A channel it holds no key for, a key from another master key, an altered ciphertext.
    let elsewhere = sealed_for(&event, "private-encrypted-velo.realtime.2b2a");
    assert!(matches!(opener.open(&elsewhere), Opened::Broken(_)));
    let mut wrong = Opener::new([(channel.to_owned(), channel_key(channel, &[8; 32]))]);
    assert!(matches!(wrong.open(&frame), Opened::Broken(_)));
    let mut altered = frame.clone();
    let at = memmem::find(&altered, b"ciphertext").unwrap() + 20;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(opener.open(&altered), Opened::Broken(_)));
}

fn duplicates_and_misdeliveries_do_not_count() {
    let mut receipts = Receipts::new(Expect {
        copies: 2,
        owner: Some((1, 3)),
        live: false,
    });
    assert!(receipts.record(1, 5_000, 10));
    assert!(receipts.record(1, 5_000, 11));
    assert!(!receipts.record(1, 5_000, 12), "a third copy");
    assert!(!receipts.record(2, 5_000, 12), "another socket's event");
    assert_eq!((receipts.duplicates, receipts.misdelivered), (1, 1));
    assert_eq!(receipts.latencies_us, [5, 5]);
}

/// Frames made by the server's own code (`Sequenced`), plain and sealed: the record's `seq`
/// is the receipt, the live one last; gaps, repeats and missing ones are violations.
fn live_seqs_are_read_and_checked_per_channel() {
    use velo_realtime::engine::events::{Action, Destination, EventData, EventNames, Sequenced};
    use velo_realtime::pusher::ChannelEvent;
    let record = serde_json::json!({"id": "r1", "seq": 42, "sent_ns": 123_456, "owner": "u1"});
    let event = EventData::new(
        Action::Created,
        record.as_object().unwrap(),
        EventNames::Actions,
    );
    let markers = Markers::new();
    let plain = Destination {
        channel: "private-velo.realtime.0f0e".into(),
        key: None,
    };
    let frame = Sequenced {
        event: &event,
        seq: 7,
    }
    .frame(&plain);
    let frame = frame.as_bytes();
    assert_eq!(markers.receipt(frame), Some((42, 123_456)));
    assert_eq!(markers.live_seq(frame), Some(7));
    assert_eq!(markers.channel(frame), b"private-velo.realtime.0f0e");
    assert_eq!(
        markers.live_seq(event.frame(&plain.channel).as_bytes()),
        None
    );

    let master = [9u8; 32];
    let channel = "private-encrypted-velo.realtime.0f0e";
    let sealed = Destination {
        channel: channel.into(),
        key: Some(ChannelKey::derive(channel, &master)),
    };
    let frame = Sequenced {
        event: &event,
        seq: 12,
    }
    .frame(&sealed);
    let mut opener = Opener::new([(channel.to_owned(), channel_key(channel, &master))]);
    let Opened::Sealed(plaintext) = opener.open(frame.as_bytes()) else {
        panic!("a sealed live delivery opens");
    };
    assert_eq!(markers.opened_receipt(plaintext), Some((42, 123_456)));
    assert_eq!(markers.opened_live_seq(plaintext), Some(12));

    let mut receipts = Receipts::new(Expect {
        copies: 1,
        owner: None,
        live: true,
    });
    // The check's own violations are not printed, and the run's first ones still are.
    let before = VIOLATIONS_SHOWN.swap(SHOWN_VIOLATIONS, Ordering::Relaxed);
    for (channel, seq) in [(b"a", 1), (b"b", 1), (b"a", 2), (b"b", 2), (b"a", 3)] {
        receipts.check_live(channel, Some(seq));
    }
    assert_eq!(receipts.seq_violations, 0);
    receipts.check_live(b"a", Some(5));
    receipts.check_live(b"a", Some(6));
    receipts.check_live(b"b", Some(2));
    receipts.check_live(b"b", None);
    assert_eq!(receipts.seq_violations, 3, "a gap, a repeat, a missing seq");
    receipts.clear();
    receipts.check_live(b"a", Some(7));
    assert_eq!(
        receipts.seq_violations, 0,
        "a run's start keeps each channel's last seq"
    );
    VIOLATIONS_SHOWN.store(before, Ordering::Relaxed);
}
