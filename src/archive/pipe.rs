//! Bounded channels between pipeline stages, with `Write` and `Read` ends so that the tar,
//! zstd and age libraries can run on their own threads. A stream ends only with an explicit
//! end marker: a stage that dies mid-stream makes the next stage fail instead of seeing a
//! clean, truncated end. Memory held is at most `capacity × chunk` per channel.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Chunk size the writers cut their output into.
pub const CHUNK: usize = 128 * 1024;
/// Chunks in flight per channel.
pub const CAPACITY: usize = 16;

/// What travels between stages.
#[derive(Debug)]
pub enum Msg {
    /// A piece of the stream.
    Data(Bytes),
    /// The stream ended successfully.
    End,
}

/// A new bounded channel.
pub fn channel() -> (mpsc::Sender<Msg>, mpsc::Receiver<Msg>) {
    mpsc::channel(CAPACITY)
}

/// The error a stage sees when the next one has stopped; the root cause is the next stage's.
pub fn downstream_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the next pipeline stage stopped")
}

/// The error a stage sees when the previous one stopped without finishing.
pub fn upstream_failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the previous pipeline stage stopped before the end of the stream",
    )
}

/// Whether `e` only reports that the next stage stopped.
pub fn is_downstream_closed(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// The writing end, used from a blocking thread.
pub struct ChanWriter {
    tx: mpsc::Sender<Msg>,
    buf: BytesMut,
}

impl ChanWriter {
    /// Wraps a sender.
    pub fn new(tx: mpsc::Sender<Msg>) -> Self {
        ChanWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self, msg: Msg) -> io::Result<()> {
        self.tx.blocking_send(msg).map_err(|_| downstream_closed())
    }

    /// Sends what is buffered and the end marker.
    ///
    /// # Errors
    /// [`downstream_closed`] when the next stage stopped.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Msg::Data(chunk))?;
        }
        self.send(Msg::End)
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            let chunk = self.buf.split().freeze();
            self.buf.reserve(CHUNK);
            self.send(Msg::Data(chunk))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end, used from a blocking thread.
pub struct ChanReader {
    rx: mpsc::Receiver<Msg>,
    cur: Bytes,
    ended: bool,
}

impl ChanReader {
    /// Wraps a receiver.
    pub fn new(rx: mpsc::Receiver<Msg>) -> Self {
        ChanReader {
            rx,
            cur: Bytes::new(),
            ended: false,
        }
    }

    /// The next chunk, `None` at a clean end.
    ///
    /// # Errors
    /// [`upstream_failed`] when the previous stage stopped without an end marker.
    pub fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.cur.is_empty() {
            return Ok(Some(std::mem::take(&mut self.cur)));
        }
        if self.ended {
            return Ok(None);
        }
        match self.rx.blocking_recv() {
            Some(Msg::Data(b)) => Ok(Some(b)),
            Some(Msg::End) => {
                self.ended = true;
                Ok(None)
            }
            None => Err(upstream_failed()),
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.next_chunk()? {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_flows_and_ends_cleanly() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || {
            let mut w = ChanWriter::new(tx);
            for i in 0..3000u32 {
                w.write_all(&i.to_le_bytes().repeat(300)).unwrap();
            }
            w.finish().unwrap();
        });
        let mut r = ChanReader::new(rx);
        let mut all = vec![];
        r.read_to_end(&mut all).unwrap();
        t.join().unwrap();
        assert_eq!(all.len(), 3000 * 1200);
        assert_eq!(&all[1200..1204], &1u32.to_le_bytes());
    }

    #[test]
    fn a_writer_dropped_without_finish_is_an_error_not_an_end() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || {
            let mut w = ChanWriter::new(tx);
            w.write_all(&[7u8; CHUNK + 10]).unwrap();
            drop(w);
        });
        let mut r = ChanReader::new(rx);
        let mut all = vec![];
        let err = r.read_to_end(&mut all).unwrap_err();
        t.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_stopped_reader_is_reported_as_downstream_closed() {
        let (tx, rx) = channel();
        drop(rx);
        let mut w = ChanWriter::new(tx);
        let err = w.write_all(&vec![0u8; CHUNK * 2]).unwrap_err();
        assert!(is_downstream_closed(&err));
    }
}
