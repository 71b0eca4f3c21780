//! The tar layer of format v1: POSIX ustar headers, with a PAX extended header only where a
//! path or size does not fit. Every entry's size is declared before its data, so this writer
//! streams exactly that many bytes and refuses a source that turns out shorter or longer;
//! it must never emit an entry whose header and data disagree.

use std::io::{self, Read, Write};

use super::hashing::TrailerHasher;

const BLOCK: usize = 512;
const USTAR_MAX_SIZE: u64 = 0o77777777777;
const COPY_BUF: usize = 256 * 1024;

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
}
