//! The tar layer of format v1, writing and reading: POSIX ustar headers, with a PAX extended
//! header only where a path or size does not fit. Every entry's size is declared before its
//! data, so the writer streams exactly that many bytes and refuses a source that turns out
//! shorter or longer; it must never emit an entry whose header and data disagree. The reader
//! takes archives from anyone who can write to the store, so it must never hold more than a
//! bounded amount of header data in memory: a PAX or GNU long-name body is refused by its
//! declared size before a byte of it is read.

use std::io::{self, Read, Write};

use super::hashing::TrailerHasher;

const BLOCK: usize = 512;
const USTAR_MAX_SIZE: u64 = 0o77777777777;
const COPY_BUF: usize = 256 * 1024;
/// Largest PAX extended header or GNU long-name body the reader accepts. Our writer puts one
/// path (and at most a size) in one; paths longer than this have no place in a backup.
pub const MAX_EXTENSION_BYTES: u64 = 4 * 1024;

/// Streams tar entries into `W`.
pub struct TarWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

/// Metadata of one entry to write.
pub struct EntryHeader<'a> {
    /// Path inside the archive.
    pub path: &'a str,
    /// Exact size of the data.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            buf: vec![0; COPY_BUF],
        }
    }

    /// Writes one entry, feeding its bytes to `hasher` and `progress` as they pass.
    ///
    /// # Errors
    /// I/O errors of either side, and `InvalidData` when `data` holds fewer or more bytes
    /// than `header.size` (a file that changed while it was read).
    pub fn append(
        &mut self,
        header: &EntryHeader<'_>,
        data: &mut dyn Read,
        hasher: &mut TrailerHasher,
        progress: &dyn Fn(u64),
    ) -> io::Result<()> {
        self.write_header(header)?;
        let mut left = header.size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: ended after {} of {} bytes (did it change while being read?)",
                            header.path,
                            header.size - left,
                            header.size
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&self.buf[..n]);
            self.out.write_all(&self.buf[..n])?;
            progress(n as u64);
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        if data.read(&mut probe)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: longer than its declared {} bytes (did it change while being read?)",
                    header.path, header.size
                ),
            ));
        }
        self.pad(header.size)
    }

    /// Writes a small in-memory entry.
    ///
    /// # Errors
    /// I/O errors.
    pub fn append_bytes(
        &mut self,
        path: &str,
        mode: u32,
        mtime: i64,
        data: &[u8],
    ) -> io::Result<()> {
        let header = EntryHeader {
            path,
            size: data.len() as u64,
            mode,
            mtime,
        };
        self.write_header(&header)?;
        self.out.write_all(data)?;
        self.pad(header.size)
    }

    /// Starts an entry whose data the caller then writes with [`TarWriter::write_data`]
    /// (exactly `header.size` bytes) and ends with [`TarWriter::end_entry`]: for data that
    /// arrives as writes rather than from a reader.
    ///
    /// # Errors
    /// I/O errors.
    pub fn start_entry(&mut self, header: &EntryHeader<'_>) -> io::Result<()> {
        self.write_header(header)
    }

    /// Writes entry data started with [`TarWriter::start_entry`].
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    /// Pads the entry of `size` bytes to the block boundary.
    ///
    /// # Errors
    /// I/O errors.
    pub fn end_entry(&mut self, size: u64) -> io::Result<()> {
        self.pad(size)
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn write_header(&mut self, h: &EntryHeader<'_>) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        let mut pax: Vec<(&str, String)> = vec![];
        if header.set_path(h.path).is_err() || h.path.len() > 100 && !h.path.is_ascii() {
            pax.push(("path", h.path.to_string()));
            let short: String = h
                .path
                .chars()
                .rev()
                .take(90)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            header.set_path(format!("pax/{}", short.trim_start_matches('/')))?;
        }
        if h.size > USTAR_MAX_SIZE {
            pax.push(("size", h.size.to_string()));
            header.set_size(0);
        } else {
            header.set_size(h.size);
        }
        header.set_mode(h.mode & 0o7777);
        header.set_mtime(h.mtime.max(0) as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        if !pax.is_empty() {
            let body = pax_records(&pax);
            let mut x = tar::Header::new_ustar();
            x.set_path("PaxHeader")?;
            x.set_size(body.len() as u64);
            x.set_mode(0o644);
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_cksum();
            self.out.write_all(x.as_bytes())?;
            self.out.write_all(&body)?;
            self.pad(body.len() as u64)?;
        }
        self.out.write_all(header.as_bytes())
    }
}

/// PAX records `"<len> <key>=<value>\n"`, where `<len>` counts the whole record itself.
fn pax_records(items: &[(&str, String)]) -> Vec<u8> {
    let mut out = vec![];
    for (k, v) in items {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        out.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    out
}

/// One entry's header as [`TarReader`] resolved it, extension headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHeader {
    /// Path: a GNU long name or PAX `path` if present, else the ustar name (lossy UTF-8).
    pub path: String,
    /// Data size: PAX `size` if present, else the header's.
    pub size: u64,
    /// Mode bits from the header (0o600 when unreadable).
    pub mode: u32,
    /// The header's type; the caller decides which it accepts.
    pub entry_type: tar::EntryType,
}

/// Reads tar entries from `R` one header at a time, handling PAX (`x`) and GNU long-name
/// (`L`) headers itself so that their bodies are bounded by [`MAX_EXTENSION_BYTES`]; global
/// PAX headers (`g`), GNU long link names (`K`) and PAX sparse files are refused. The current
/// entry's data is read through the `Read` impl.
pub struct TarReader<R: Read> {
    inner: R,
    left: u64,
    pad: u64,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> TarReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            left: 0,
            pad: 0,
        }
    }

    /// The underlying reader, positioned after what was consumed.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Skips what is left of the current entry and reads the next header; `None` at the
    /// end-of-archive marker or a clean end of input.
    ///
    /// # Errors
    /// `InvalidData` for a bad checksum, an oversized or repeated extension header, a global
    /// header, a long link name, or an extension header with no entry after it; `UnexpectedEof`
    /// for a truncated header or body; the underlying reader's errors.
    pub fn next_entry(&mut self) -> io::Result<Option<ReadHeader>> {
        let skip = self.left + self.pad;
        self.left = 0;
        self.pad = 0;
        let skipped = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())?;
        if skipped != skip {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar data ends inside an entry",
            ));
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? || block.iter().all(|b| *b == 0) {
                if long_name.is_some() || pax.is_some() {
                    return Err(bad("an extension header is not followed by an entry".into()));
                }
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let sum: u32 = block[..148]
                .iter()
                .chain(&block[156..])
                .map(|b| u32::from(*b))
                .sum::<u32>()
                + 8 * u32::from(b' ');
            if header.cksum().ok() != Some(sum) {
                return Err(bad("tar header checksum mismatch".into()));
            }
            let size = header.entry_size()?;
            let kind = header.entry_type();
            let slot = match kind {
                tar::EntryType::XHeader => Some(("PAX extended header", &mut pax)),
                tar::EntryType::GNULongName => Some(("GNU long-name header", &mut long_name)),
                tar::EntryType::XGlobalHeader => {
                    return Err(bad(
                        "a PAX global header is not allowed in a cpvault archive".into(),
                    ))
                }
                tar::EntryType::GNULongLink => {
                    return Err(bad(
                        "a GNU long link name is not allowed: links are refused".into(),
                    ))
                }
                _ => None,
            };
            if let Some((what, slot)) = slot {
                if slot.is_some() {
                    return Err(bad(format!("two {what}s for one entry")));
                }
                if size > MAX_EXTENSION_BYTES {
                    return Err(bad(format!(
                        "{what} of {size} bytes, over the {MAX_EXTENSION_BYTES}-byte limit; not read"
                    )));
                }
                let mut body = vec![0u8; size as usize];
                self.inner.read_exact(&mut body)?;
                self.skip_padding(size)?;
                *slot = Some(body);
                continue;
            }
            let mut path = match &long_name {
                Some(n) => {
                    String::from_utf8_lossy(n.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
                }
                None => String::from_utf8_lossy(&header.path_bytes()).into_owned(),
            };
            let mut size = size;
            if let Some(body) = &pax {
                for record in tar::PaxExtensions::new(body) {
                    let record = record.map_err(|_| bad("malformed PAX record".into()))?;
                    let key = record.key().map_err(|_| bad("malformed PAX key".into()))?;
                    match key {
                        "path" if long_name.is_none() => {
                            path = String::from_utf8_lossy(record.value_bytes()).into_owned()
                        }
                        "size" => {
                            size = record
                                .value()
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .ok_or_else(|| bad("malformed PAX size".into()))?
                        }
                        k if k.starts_with("GNU.sparse.") => {
                            return Err(bad("sparse files are not allowed".into()))
                        }
                        _ => {}
                    }
                }
            }
            self.left = size;
            self.pad = padding(size);
            return Ok(Some(ReadHeader {
                path,
                size,
                mode: header.mode().unwrap_or(0o600),
                entry_type: kind,
            }));
        }
    }

    /// Reads one block; `false` at a clean end of input.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut block[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "tar data ends inside a header",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn skip_padding(&mut self, size: u64) -> io::Result<()> {
        let mut pad = [0u8; BLOCK];
        self.inner.read_exact(&mut pad[..padding(size) as usize])
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar data ends inside an entry",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_records(&[("path", "a".repeat(95))]);
        let s = String::from_utf8(r).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), s.len());
    }

    #[test]
    fn long_paths_round_trip_through_the_tar_crate() {
        let long = format!("pki/{}/ca.crt", "d".repeat(200));
        let mut w = TarWriter::new(Vec::new());
        let mut h = TrailerHasher::new();
        w.append(
            &EntryHeader {
                path: &long,
                size: 5,
                mode: 0o600,
                mtime: 1,
            },
            &mut &b"hello"[..],
            &mut h,
            &|_| {},
        )
        .unwrap();
        w.append_bytes("short", 0o644, 2, b"xy").unwrap();
        let bytes = w.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let names: Vec<(String, u32)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(names, vec![(long, 0o600), ("short".to_string(), 0o644)]);
    }

    #[test]
    fn a_source_shorter_than_declared_is_refused() {
        let mut w = TarWriter::new(Vec::new());
        let err = w
            .append(
                &EntryHeader {
                    path: "x",
                    size: 10,
                    mode: 0o600,
                    mtime: 1,
                },
                &mut &b"abc"[..],
                &mut TrailerHasher::new(),
                &|_| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("ended after 3 of 10"), "{err}");
        let err = w
            .append(
                &EntryHeader {
                    path: "y",
                    size: 2,
                    mode: 0o600,
                    mtime: 1,
                },
                &mut &b"abc"[..],
                &mut TrailerHasher::new(),
                &|_| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    fn raw_header(path: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn the_reader_reads_what_the_writer_writes() {
        let long = format!("pki/{}/ca.crt", "d".repeat(200));
        let mut w = TarWriter::new(Vec::new());
        w.append_bytes(&long, 0o600, 1, b"hello").unwrap();
        w.append_bytes("short", 0o644, 2, b"xy").unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let mut seen = vec![];
        while let Some(h) = r.next_entry().unwrap() {
            let mut data = vec![];
            r.read_to_end(&mut data).unwrap();
            seen.push((h.path, h.mode, data));
        }
        assert_eq!(
            seen,
            vec![
                (long, 0o600, b"hello".to_vec()),
                ("short".to_string(), 0o644, b"xy".to_vec())
            ]
        );
    }

    #[test]
    fn a_pax_size_overrides_the_header_size() {
        // What the writer emits for an entry over 8 GiB, at a size a test can hold.
        let body = pax_records(&[("size", "5".into())]);
        let mut t = raw_header("PaxHeader", body.len() as u64, tar::EntryType::XHeader);
        t.extend(&body);
        t.resize(t.len() + 512 - body.len() % 512, 0);
        t.extend(raw_header("big", 0, tar::EntryType::Regular));
        t.extend(b"hello");
        t.resize(t.len() + 507 + 1024, 0);
        let mut r = TarReader::new(&t[..]);
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!((h.path.as_str(), h.size), ("big", 5));
        let mut data = vec![];
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"hello");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn oversized_extension_headers_are_refused_unread() {
        // Declares 40 MB and holds none of it: the refusal must come from the size alone.
        for kind in [tar::EntryType::XHeader, tar::EntryType::GNULongName] {
            let t = raw_header("x", 40_000_000, kind);
            let err = TarReader::new(&t[..]).next_entry().unwrap_err();
            assert!(err.to_string().contains("4096-byte limit"), "{err}");
        }
        for kind in [tar::EntryType::XGlobalHeader, tar::EntryType::GNULongLink] {
            let t = raw_header("x", 10, kind);
            assert!(TarReader::new(&t[..]).next_entry().is_err());
        }
    }

    #[test]
    fn two_pax_headers_for_one_entry_are_refused() {
        let body = pax_records(&[("path", "pki/a".into())]);
        let mut one = raw_header("PaxHeader", body.len() as u64, tar::EntryType::XHeader);
        one.extend(&body);
        one.resize(1024, 0);
        let t = [one.clone(), one].concat();
        let err = TarReader::new(&t[..]).next_entry().unwrap_err();
        assert!(err.to_string().contains("two PAX"), "{err}");
    }
}
