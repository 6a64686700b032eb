//! Reading and writing recordings: plain, gzip or zstd, told apart by their
//! magic bytes when reading and by the file name when writing.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Opens `path` (`-` or none: standard input) for reading, decompressing
/// gzip and zstd, whatever the file is called.
pub fn open(path: Option<&Path>) -> Result<Box<dyn BufRead>> {
    open_counted(path, Arc::new(AtomicU64::new(0)))
}

/// [`open`], adding to `read` the bytes taken from the file (compressed
/// bytes, for a compressed file), for progress reports.
pub fn open_counted(path: Option<&Path>, read: Arc<AtomicU64>) -> Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = match path {
        None => Box::new(io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(io::stdin().lock()),
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
    };
    let mut reader = BufReader::with_capacity(1 << 16, Counted { inner: raw, read });
    let head = reader.fill_buf().context("cannot read input")?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(BufReader::new(
            zstd::Decoder::with_buffer(reader).context("cannot start zstd")?,
        ))
    } else {
        Box::new(reader)
    })
}

/// A reader that counts what passes through it.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How the records of a recording are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON record per line.
    JsonLines,
    /// Protobuf records, each after its varint length.
    LengthDelimited,
}

/// Tells a recording's framing by its first byte: JSON lines start with
/// `{` (or whitespace), a length-delimited record with a varint length.
pub fn framing(reader: &mut dyn BufRead) -> Result<Framing> {
    let head = reader.fill_buf().context("cannot read input")?;
    Ok(match head.first() {
        None | Some(b'{' | b' ' | b'\t' | b'\r' | b'\n') => Framing::JsonLines,
        Some(_) => Framing::LengthDelimited,
    })
}

/// Reads the next length-delimited record into `record`; false at the end
/// of input.
pub fn next_delimited(reader: &mut dyn BufRead, record: &mut Vec<u8>) -> Result<bool> {
    let mut length: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).context("cannot read input")? == 0 {
            anyhow::ensure!(shift == 0, "recording ends inside a record's length");
            return Ok(false);
        }
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    anyhow::ensure!(
        length <= hashbuy_core::decode::MAX_RECORD_BYTES as u64,
        "a record of {length} bytes is over the limit; is this a length-delimited protobuf recording?"
    );
    record.resize(length as usize, 0);
    reader
        .read_exact(record)
        .context("recording ends inside a record")?;
    Ok(true)
}

/// A file being written, compressed by its name's extension.
pub enum Output {
    /// Standard output, or a file without a known extension.
    Plain(Box<dyn Write>),
    /// `.gz`.
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    /// `.zst`.
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

/// Creates `path` for writing, compressing by its extension (`.gz`,
/// `.zst`); `-` is standard output.
pub fn create(path: &Path) -> Result<Output> {
    if path == Path::new("-") {
        return Ok(Output::Plain(Box::new(BufWriter::with_capacity(
            1 << 16,
            io::stdout().lock(),
        ))));
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let file = BufWriter::with_capacity(1 << 20, file);
    let name = path.to_string_lossy();
    Ok(if name.ends_with(".gz") {
        Output::Gzip(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else if name.ends_with(".zst") {
        Output::Zstd(zstd::Encoder::new(file, 3).context("cannot start zstd")?)
    } else {
        Output::Plain(Box::new(file))
    })
}

impl Output {
    /// Flushes everything and writes the compressed stream's trailer.
    pub fn finish(self) -> io::Result<()> {
        match self {
            Output::Plain(mut w) => w.flush(),
            Output::Gzip(w) => w.finish()?.flush(),
            Output::Zstd(w) => w.finish()?.flush(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Gzip(w) => w.write(buf),
            Output::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.write_all(buf),
            Output::Gzip(w) => w.write_all(buf),
            Output::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Gzip(w) => w.flush(),
            Output::Zstd(w) => w.flush(),
        }
    }
}

/// Reads the next line into `line` without its `\n` or `\r\n`; false at
/// the end of input.
pub fn next_line(reader: &mut dyn BufRead, line: &mut Vec<u8>) -> Result<bool> {
    line.clear();
    if reader
        .read_until(b'\n', line)
        .context("cannot read input")?
        == 0
    {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(true)
}

/// Whether an error is a closed standard output (`hashbuy … | head`),
/// which ends the command quietly rather than as a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
