//! A fake-capacity disk for the guest, like the counterfeit USB sticks sold as larger than they are: an NBD
//! server on a Unix socket (QEMU's own NBD client attaches it as a drive) that claims `claimed` bytes but
//! stores only as many as its backing file holds; every offset wraps around modulo that size, so writes
//! past the real capacity land on earlier data and every write still succeeds.
//!
//! The server speaks what QEMU needs of the NBD protocol (<https://github.com/NetworkBlockDevice/nbd>,
//! doc/proto.md): the fixed newstyle handshake with `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME`), simple
//! replies (structured replies and metadata contexts are declined), and the read, write, flush and
//! disconnect commands. One connection, requests served in order.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CLIENT_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const INFO_EXPORT: u16 = 0;

/// Transmission flags: flags are sent, and flush is supported.
const TRANSMISSION: u16 = 1 | 4;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const EINVAL: u32 = 22;

/// The largest request served (QEMU's own limit is 32 MiB).
const MAX_REQUEST: u32 = 32 << 20;

/// A running fake-capacity disk: attach it with `builder::qemu::Disk::nbd(&stick.socket, ..)`.
pub struct FakeStick {
    pub socket: PathBuf,
    server: Option<JoinHandle<io::Result<()>>>,
}

impl FakeStick {
    /// Serves `backing` (its length is the real capacity) on a new Unix socket at `socket` as a disk of
    /// `claimed` bytes.
    pub fn serve(backing: &Path, claimed: u64, socket: &Path) -> io::Result<FakeStick> {
        let file = OpenOptions::new().read(true).write(true).open(backing)?;
        let real = file.metadata()?.len();
        if real == 0 || claimed < real {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a fake stick claims more than its {real} bytes, not {claimed}"),
            ));
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let disk = Wrapped {
            file,
            real,
            claimed,
        };
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept()?;
            disk.serve(stream)
        });
        Ok(FakeStick {
            socket: socket.to_path_buf(),
            server: Some(server),
        })
    }

    /// Waits for the client to disconnect (QEMU exits) and returns what ended the connection.
    pub fn finish(mut self) -> io::Result<()> {
        match self.server.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the NBD server thread panicked")),
            None => Ok(()),
        }
    }
}

/// The backing file of `real` bytes seen as a disk of `claimed` bytes, offsets taken modulo `real`.
struct Wrapped {
    file: File,
    real: u64,
    claimed: u64,
}

impl Wrapped {
    fn serve(&self, mut s: UnixStream) -> io::Result<()> {
        if !self.handshake(&mut s)? {
            return Ok(());
        }
        loop {
            let mut h = [0u8; 28];
            match s.read_exact(&mut h) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                r => r?,
            }
            if be(&h[0..], 4) as u32 != REQUEST_MAGIC {
                return Err(io::Error::other("bad NBD request magic"));
            }
            let kind = be(&h[6..], 2) as u16;
            let handle = &h[8..16];
            let offset = be(&h[16..], 8);
            let len = be(&h[24..], 4) as u32;
            let in_range =
                len <= MAX_REQUEST && offset.saturating_add(u64::from(len)) <= self.claimed;
            let mut data = vec![0u8; if kind == CMD_WRITE { len as usize } else { 0 }];
            s.read_exact(&mut data)?;
            let mut reply = Vec::with_capacity(16);
            reply.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
            let error = match kind {
                CMD_DISC => return Ok(()),
                CMD_READ | CMD_WRITE if !in_range => EINVAL,
                CMD_READ => {
                    let mut buf = vec![0u8; len as usize];
                    self.io(&mut buf, offset, |f, b, at| f.read_exact_at(b, at))?;
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(handle);
                    reply.extend_from_slice(&buf);
                    s.write_all(&reply)?;
                    continue;
                }
                CMD_WRITE => {
                    self.io(&mut data, offset, |f, b, at| f.write_all_at(b, at))?;
                    0
                }
                CMD_FLUSH => {
                    self.file.sync_data()?;
                    0
                }
                _ => EINVAL,
            };
            reply.extend_from_slice(&error.to_be_bytes());
            reply.extend_from_slice(handle);
            s.write_all(&reply)?;
        }
    }

    /// `op` over `buf` at the claimed `offset`, split where it wraps around.
    fn io(
        &self,
        buf: &mut [u8],
        offset: u64,
        op: impl Fn(&File, &mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = (offset + done as u64) % self.real;
            let n = ((self.real - at) as usize).min(buf.len() - done);
            op(&self.file, &mut buf[done..done + n], at)?;
            done += n;
        }
        Ok(())
    }

    /// The fixed newstyle handshake; false when the client gave up before transmission.
    fn handshake(&self, s: &mut UnixStream) -> io::Result<bool> {
        let mut hello = Vec::new();
        hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
        hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
        hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        s.write_all(&hello)?;
        let client = read_u32(s)?;
        let export = |out: &mut Vec<u8>| {
            out.extend_from_slice(&self.claimed.to_be_bytes());
            out.extend_from_slice(&TRANSMISSION.to_be_bytes());
        };
        loop {
            let mut h = [0u8; 16];
            s.read_exact(&mut h)?;
            if be(&h[0..], 8) != IHAVEOPT {
                return Err(io::Error::other("bad NBD option magic"));
            }
            let opt = be(&h[8..], 4) as u32;
            let len = be(&h[12..], 4) as u32;
            if len > 1 << 16 {
                return Err(io::Error::other("NBD option too long"));
            }
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data)?;
            match opt {
                OPT_EXPORT_NAME => {
                    let mut out = Vec::new();
                    export(&mut out);
                    if client & CLIENT_NO_ZEROES == 0 {
                        out.extend_from_slice(&[0u8; 124]);
                    }
                    s.write_all(&out)?;
                    return Ok(true);
                }
                OPT_GO | OPT_INFO => {
                    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                    export(&mut info);
                    option_reply(s, opt, REP_INFO, &info)?;
                    option_reply(s, opt, REP_ACK, &[])?;
                    if opt == OPT_GO {
                        return Ok(true);
                    }
                }
                OPT_ABORT => {
                    option_reply(s, opt, REP_ACK, &[])?;
                    return Ok(false);
                }
                _ => option_reply(s, opt, REP_ERR_UNSUP, &[])?,
            }
        }
    }
}

fn option_reply(s: &mut UnixStream, opt: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out)
}

/// The big-endian number in the first `n` bytes of `b`.
fn be(b: &[u8], n: usize) -> u64 {
    b[..n].iter().fold(0, |v, &x| v << 8 | u64::from(x))
}

fn read_u32(s: &mut UnixStream) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// QEMU's own NBD client (qemu-io) sees the claimed size, and a write past the real capacity lands on
    /// the start of the backing file, as on a counterfeit stick.
    #[test]
    fn writes_past_the_real_capacity_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("stick.img");
        File::create(&backing).unwrap().set_len(1 << 20).unwrap();
        let socket = dir.path().join("nbd.sock");
        let stick = FakeStick::serve(&backing, 4 << 20, &socket).unwrap();
        let uri = format!("nbd+unix:///?socket={}", socket.display());
        let out = Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 0x5a 3145728 4096",
                "-c",
                "read -P 0x5a 0 4096",
            ])
            .args(["-c", "read -P 0 4096 4096", "-c", "flush", "-c", "length"])
            .arg(&uri)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("Pattern verification failed"),
            "{text}"
        );
        assert!(text.contains("4 MiB"), "the claimed size: {text}");
        stick.finish().unwrap();
        let data = std::fs::read(&backing).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert!(data[..4096].iter().all(|&b| b == 0x5a));
        assert!(data[4096..].iter().all(|&b| b == 0));
    }
}
