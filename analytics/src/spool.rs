//! The durable spool: usage events on disk between the in-memory queue and the
//! usage store, so a store outage or a crash loses nothing that was synced.
//!
//! Events are appended as records to segment files in a directory (normally
//! `<data dir>/spool`). A segment is written by one [`SpoolWriter`], synced to
//! disk on an interval, and sealed when it reaches its size or when the writer
//! hands it to the shipper; a sealed segment is never written again. The shipper
//! reads sealed segments oldest first, sends their events to the store, and
//! deletes a segment only after the store has confirmed every event in it. At
//! start every segment found in the directory is treated as sealed and shipped
//! again: the store drops events it already has by id.
//!
//! On disk a segment is `TGSPOOL1` followed by records of
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. Reading stops
//! at the first record that is cut short or fails its checksum — the torn tail of
//! a crash, or corruption — and counts the bytes it skips; it is never fatal.
//! A size cap protects the disk: when the spool is full, appends are refused and
//! counted, and serving goes on.
//!
//! The disk itself may refuse a write (full: ENOSPC; a file size limit: EFBIG;
//! a failing device: EIO). Records are written straight to the file, not
//! buffered, so the error belongs to the record being appended: that record
//! is refused and counted, whatever part of it reached the file is cut off
//! again, and the segment is sealed and handed over with every record before
//! it. The next append starts a new segment — there is no failed state to
//! leave, each append simply tries the disk again. A failed sync seals the
//! segment too: its records were written, the disk did not confirm them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The first bytes of every segment file.
const MAGIC: &[u8; 8] = b"TGSPOOL1";
/// Bytes before each record's payload.
const RECORD_HEADER: u64 = 8;
/// No event comes near this; a longer length is corruption.
const MAX_RECORD: u32 = 1 << 20;
/// Segment files are named by sequence number with this extension.
const EXTENSION: &str = "seg";

/// Sizes of the spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// The spool refuses appends beyond this many bytes on disk.
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            segment_bytes: 8 << 20,
            max_bytes: 1 << 30,
        }
    }
}

/// Counters of the spool, for metrics; shared by the writer and the shipper.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Bytes of segments on disk.
    pub bytes: AtomicU64,
    /// Segment files on disk.
    pub segments: AtomicU64,
    /// Records refused because the spool was full.
    pub dropped_full: AtomicU64,
    /// Records refused because the disk failed (write error).
    pub dropped_io: AtomicU64,
    /// Segments whose tail was cut short or corrupt.
    pub corrupt_tails: AtomicU64,
    /// Bytes skipped in such tails.
    pub skipped_bytes: AtomicU64,
}

/// A sealed segment, ready to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number: segments ship in this order.
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What was read back from a segment.
#[derive(Debug, Default)]
pub struct SegmentRecords {
    /// The intact records, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes after the last intact record (a torn or corrupt tail), skipped.
    pub skipped_bytes: u64,
}

/// The disk refused a write or a sync of the spool.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the usage spool: {source}")]
pub struct WriteError {
    /// What the disk said.
    pub source: io::Error,
    /// The segment being written, sealed because of the failure: it holds the
    /// records written before, to ship. `None` when no segment was open or it
    /// held no record (it is deleted).
    pub sealed: Option<Segment>,
}

/// Why an append was refused. A refused record is not in the spool.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The spool holds its maximum size.
    #[error("the usage spool is full ({0} bytes)")]
    Full(u64),
    /// The disk refused the write.
    #[error(transparent)]
    Write(#[from] WriteError),
}

struct Open {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes of the magic and the whole records written.
    bytes: u64,
}

impl Open {
    fn segment(self) -> Segment {
        Segment {
            seq: self.seq,
            path: self.path,
            bytes: self.bytes,
        }
    }
}

/// The appending side of the spool. One per spool directory.
pub struct SpoolWriter {
    dir: PathBuf,
    limits: SpoolLimits,
    stats: Arc<SpoolStats>,
    next_seq: u64,
    open: Option<Open>,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("dir", &self.dir)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{EXTENSION}"))
}

impl SpoolWriter {
    /// Opens (creating) the spool directory. Returns the writer and every
    /// segment already there, oldest first: what a previous run did not ship.
    pub fn open(
        dir: &Path,
        limits: SpoolLimits,
        stats: Arc<SpoolStats>,
    ) -> io::Result<(Self, Vec<Segment>)> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            let Some(seq) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata()?.len();
            found.push(Segment { seq, path, bytes });
        }
        found.sort_by_key(|s| s.seq);
        stats
            .bytes
            .store(found.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
        stats.segments.store(found.len() as u64, Ordering::Relaxed);
        let next_seq = found.last().map_or(1, |s| s.seq + 1);
        Ok((
            Self {
                dir: dir.to_owned(),
                limits,
                stats,
                next_seq,
                open: None,
            },
            found,
        ))
    }

    /// The spool's counters.
    pub fn stats(&self) -> &Arc<SpoolStats> {
        &self.stats
    }

    /// Appends one record, written to the file at once. A refused record is
    /// counted; when the disk refused it, the segment is sealed (see
    /// [`WriteError`]). Seal the segment once [`Self::segment_full`].
    pub fn append(&mut self, payload: &[u8]) -> Result<(), AppendError> {
        let len = RECORD_HEADER + payload.len() as u64;
        let on_disk = self.stats.bytes.load(Ordering::Relaxed);
        if on_disk + len > self.limits.max_bytes {
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::Full(on_disk));
        }
        self.write_record(payload).inspect_err(|_| {
            self.stats.dropped_io.fetch_add(1, Ordering::Relaxed);
        })?;
        let open = self.open.as_mut().expect("written above");
        open.bytes += len;
        self.stats.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<(), WriteError> {
        let Some(length) = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD)
        else {
            // Not the disk's doing: the segment is fine as it is.
            return Err(WriteError {
                source: io::Error::new(io::ErrorKind::InvalidInput, "record too large"),
                sealed: None,
            });
        };
        let written = self.open_segment().and_then(|open| {
            let mut header = [0u8; RECORD_HEADER as usize];
            header[..4].copy_from_slice(&length.to_le_bytes());
            header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
            open.file.write_all(&header)?;
            open.file.write_all(payload)
        });
        written.map_err(|source| self.refused(source))
    }

    /// The segment being written, a new one if none is: created with its
    /// magic, or not at all.
    fn open_segment(&mut self) -> io::Result<&mut Open> {
        if self.open.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = segment_path(&self.dir, seq);
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)?;
            if let Err(e) = file.write_all(MAGIC) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            self.stats
                .bytes
                .fetch_add(MAGIC.len() as u64, Ordering::Relaxed);
            self.stats.segments.fetch_add(1, Ordering::Relaxed);
            self.open = Some(Open {
                seq,
                path,
                file,
                bytes: MAGIC.len() as u64,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// After the disk refused a write: the segment loses what part of the
    /// record reached it (the disk may have taken some bytes before it
    /// refused) and is sealed. One with no record is deleted instead.
    fn refused(&mut self, source: io::Error) -> WriteError {
        let Some(open) = self.open.take() else {
            return WriteError {
                source,
                sealed: None,
            };
        };
        // Shrinking needs no room. Should it fail, readers stop at the torn
        // record; nothing is written after it.
        let _ = open.file.set_len(open.bytes);
        let _ = open.file.sync_data();
        let segment = open.segment();
        if segment.bytes <= MAGIC.len() as u64 && remove_segment(&segment, &self.stats).is_ok() {
            return WriteError {
                source,
                sealed: None,
            };
        }
        WriteError {
            source,
            sealed: Some(segment),
        }
    }

    /// Whether the segment being written has reached its size and should be
    /// sealed.
    pub fn segment_full(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.bytes >= self.limits.segment_bytes)
    }

    /// Asks the disk to keep what was appended: it survives a crash of the
    /// process or machine. If the disk fails to, the segment is sealed.
    pub fn sync(&mut self) -> Result<(), WriteError> {
        let Some(open) = &self.open else {
            return Ok(());
        };
        open.file.sync_data().map_err(|source| WriteError {
            source,
            sealed: self.open.take().map(Open::segment),
        })
    }

    /// Syncs and closes the segment being written, handing it over for
    /// shipping; `None` when nothing was appended since the last seal. If the
    /// sync fails, the error holds the segment: its records were written, so
    /// it is handed over all the same.
    pub fn seal(&mut self) -> Result<Option<Segment>, WriteError> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        match open.file.sync_data() {
            Ok(()) => Ok(Some(open.segment())),
            Err(source) => Err(WriteError {
                source,
                sealed: Some(open.segment()),
            }),
        }
    }
}

/// A spool directory this process holds alone for as long as it runs.
#[derive(Debug)]
pub struct SpoolClaim {
    /// The directory to open with [`SpoolWriter::open`].
    pub dir: PathBuf,
    /// Segments moved in from slots no running process held.
    pub adopted: usize,
    _lock: File,
}

/// Most processes sharing one spool root.
const SLOTS: usize = 64;
/// The lock file of a slot.
const LOCK: &str = "lock";

fn lock_slot(dir: &Path) -> io::Result<Option<File>> {
    fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        if let Some(seq) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Claims a slot of the spool root `root`: the first of `root/0`, `root/1`, …
/// that no running process holds (a lock file, released by the kernel when a
/// process ends, even by SIGKILL). Several processes may share a data dir, so
/// each gets its own slot. Segments left in the other free slots — by a process
/// that stopped and did not come back — are moved into the claimed one, so
/// whichever process starts next ships them.
pub fn claim(root: &Path) -> io::Result<SpoolClaim> {
    fs::create_dir_all(root)?;
    let mut mine = None;
    for slot in 0..SLOTS {
        let dir = root.join(slot.to_string());
        if let Some(lock) = lock_slot(&dir)? {
            mine = Some((dir, lock));
            break;
        }
    }
    let Some((dir, lock)) = mine else {
        return Err(io::Error::other(format!(
            "all {SLOTS} usage spool slots in {} are held by running processes",
            root.display()
        )));
    };
    let mut next = segment_files(&dir)?.last().map_or(1, |(seq, _)| seq + 1);
    let mut adopted = 0;
    for entry in fs::read_dir(root)? {
        let other = entry?.path();
        let is_slot = other
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if other == dir || !is_slot || !other.is_dir() {
            continue;
        }
        // Held while we move its segments; dropped (unlocked) after.
        let Some(_held) = lock_slot(&other)? else {
            continue;
        };
        for (_, path) in segment_files(&other)? {
            fs::rename(&path, segment_path(&dir, next))?;
            next += 1;
            adopted += 1;
        }
    }
    Ok(SpoolClaim {
        dir,
        adopted,
        _lock: lock,
    })
}

/// Reads a sealed segment's intact records; a torn or corrupt tail is skipped
/// and counted in `stats`.
pub fn read_segment(segment: &Segment, stats: &SpoolStats) -> io::Result<SegmentRecords> {
    let mut data = Vec::with_capacity(segment.bytes as usize);
    File::open(&segment.path)?.read_to_end(&mut data)?;
    let mut out = SegmentRecords::default();
    let mut at = if data.starts_with(MAGIC) {
        MAGIC.len()
    } else {
        // Not even the magic: the whole file is a torn tail.
        0
    };
    if at == 0 {
        out.skipped_bytes = data.len() as u64;
    } else {
        loop {
            let rest = &data[at..];
            if rest.is_empty() {
                break;
            }
            let intact = (|| {
                let header = rest.get(..RECORD_HEADER as usize)?;
                let len = u32::from_le_bytes(header[..4].try_into().ok()?);
                let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
                if len > MAX_RECORD {
                    return None;
                }
                let payload =
                    rest.get(RECORD_HEADER as usize..RECORD_HEADER as usize + len as usize)?;
                (crc32fast::hash(payload) == crc).then_some(payload)
            })();
            match intact {
                Some(payload) => {
                    at += RECORD_HEADER as usize + payload.len();
                    out.records.push(payload.to_vec());
                }
                None => {
                    out.skipped_bytes = rest.len() as u64;
                    break;
                }
            }
        }
    }
    if out.skipped_bytes > 0 {
        stats.corrupt_tails.fetch_add(1, Ordering::Relaxed);
        stats
            .skipped_bytes
            .fetch_add(out.skipped_bytes, Ordering::Relaxed);
        tracing::warn!(
            segment = %segment.path.display(),
            skipped_bytes = out.skipped_bytes,
            records = out.records.len(),
            "usage spool segment has a torn or corrupt tail; its intact records are kept"
        );
    }
    Ok(out)
}

/// Deletes a shipped segment and takes it off the spool's size.
pub fn remove_segment(segment: &Segment, stats: &SpoolStats) -> io::Result<()> {
    match fs::remove_file(&segment.path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let less = |by: u64| move |v: u64| Some(v.saturating_sub(by));
    let _ = stats
        .bytes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, less(segment.bytes));
    let _ = stats
        .segments
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, less(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, limits: SpoolLimits) -> (SpoolWriter, Vec<Segment>, Arc<SpoolStats>) {
        let stats = Arc::new(SpoolStats::default());
        let (w, found) = SpoolWriter::open(dir, limits, stats.clone()).unwrap();
        (w, found, stats)
    }

    #[test]
    fn records_come_back_in_order_and_segments_roll_over() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            segment_bytes: 100,
            max_bytes: 1 << 20,
        };
        let (mut w, found, stats) = open(dir.path(), limits);
        assert!(found.is_empty());
        let mut sealed = Vec::new();
        for i in 0..20u32 {
            w.append(format!("event-{i}").as_bytes()).unwrap();
            if w.segment_full() {
                sealed.extend(w.seal().unwrap());
            }
        }
        sealed.extend(w.seal().unwrap());
        assert!(sealed.len() > 2, "{sealed:?}");
        assert!(w.seal().unwrap().is_none(), "nothing to seal twice");
        let all: Vec<String> = sealed
            .iter()
            .flat_map(|s| read_segment(s, &stats).unwrap().records)
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(
            all,
            (0..20).map(|i| format!("event-{i}")).collect::<Vec<_>>()
        );
        let on_disk: u64 = sealed.iter().map(|s| s.bytes).sum();
        assert_eq!(stats.bytes.load(Ordering::Relaxed), on_disk);
        for s in &sealed {
            assert_eq!(fs::metadata(&s.path).unwrap().len(), s.bytes);
            remove_segment(s, &stats).unwrap();
        }
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(stats.segments.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unshipped_segments_are_found_again_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _, _) = open(dir.path(), SpoolLimits::default());
        w.append(b"a").unwrap();
        let first = w.seal().unwrap().unwrap();
        w.append(b"b").unwrap();
        w.sync().unwrap();
        drop(w); // a crash after the sync: the open segment stays on disk
        let (mut w, found, stats) = open(dir.path(), SpoolLimits::default());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], first);
        assert_eq!(
            read_segment(&found[1], &stats).unwrap().records,
            [b"b".to_vec()]
        );
        // New segments continue after the old ones.
        w.append(b"c").unwrap();
        let next = w.seal().unwrap().unwrap();
        assert!(next.seq > found[1].seq);
    }

    /// A sealed segment of the records "one", "two" and "three".
    fn one_two_three(dir: &Path) -> (Segment, Arc<SpoolStats>) {
        let (mut w, _, stats) = open(dir, SpoolLimits::default());
        for r in [b"one".as_slice(), b"two", b"three"] {
            w.append(r).unwrap();
        }
        (w.seal().unwrap().unwrap(), stats)
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, stats) = one_two_three(dir.path());
        // Torn: the last record cut in half.
        let data = fs::read(&seg.path).unwrap();
        fs::write(&seg.path, &data[..data.len() - 3]).unwrap();
        let got = read_segment(&seg, &stats).unwrap();
        assert_eq!(got.records, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(got.skipped_bytes, RECORD_HEADER + 2);
        // Corrupt: a flipped byte in the second payload stops reading there.
        let mut bad = data.clone();
        let at = MAGIC.len() + RECORD_HEADER as usize + 3 + RECORD_HEADER as usize;
        bad[at] ^= 0xff;
        fs::write(&seg.path, &bad).unwrap();
        let got = read_segment(&seg, &stats).unwrap();
        assert_eq!(got.records, [b"one".to_vec()]);
        assert_eq!(stats.corrupt_tails.load(Ordering::Relaxed), 2);
        // Garbage without the magic is skipped whole, not fatal.
        fs::write(&seg.path, b"garbage").unwrap();
        let got = read_segment(&seg, &stats).unwrap();
        assert!(got.records.is_empty());
        assert_eq!(got.skipped_bytes, 7);
    }

    #[test]
    fn a_record_cut_at_any_byte_loses_only_itself() {
        // What a write the disk refused part way leaves behind if the process
        // dies before cutting it off again.
        let dir = tempfile::tempdir().unwrap();
        let (seg, stats) = one_two_three(dir.path());
        let data = fs::read(&seg.path).unwrap();
        let last = RECORD_HEADER as usize + 5;
        for kept in 1..last {
            fs::write(&seg.path, &data[..data.len() - last + kept]).unwrap();
            let got = read_segment(&seg, &stats).unwrap();
            assert_eq!(
                got.records,
                [b"one".to_vec(), b"two".to_vec()],
                "{kept} bytes of the last record"
            );
            assert_eq!(got.skipped_bytes, kept as u64);
        }
    }

    /// Runs this module's test `name` again in a child process whose files
    /// the operating system refuses to grow past `limit` bytes (EFBIG, see
    /// `tollgate_testkit::file_limit`). True in the child, which does the
    /// test's work; false in the parent once the child has passed.
    fn in_child_with_file_size_limit(name: &str, limit: u64) -> bool {
        const CHILD: &str = "TOLLGATE_SPOOL_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let module = module_path!().split_once("::").unwrap().1;
        let test = format!("{module}::{name}");
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1");
        let out = tollgate_testkit::file_limit::file_size_limited(&cmd, limit)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} with files limited to {limit} bytes: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    #[test]
    fn a_write_the_disk_refuses_loses_that_record_only_and_writing_goes_on() {
        // Records of 100 bytes take 108 after the magic's 8: the limit cuts
        // the fourth one in its payload.
        const LIMIT: u64 = 8 + 3 * 108 + 50;
        if !in_child_with_file_size_limit(
            "a_write_the_disk_refuses_loses_that_record_only_and_writing_goes_on",
            LIMIT,
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            segment_bytes: 1 << 20,
            max_bytes: 1 << 20,
        };
        let (mut w, _, stats) = open(dir.path(), limits);
        let record = |i: u8, len: usize| vec![i; len];
        let refused = |result: Result<(), AppendError>| match result {
            Err(AppendError::Write(e)) => {
                assert_eq!(e.source.kind(), io::ErrorKind::FileTooLarge, "{e}");
                e.sealed
            }
            other => panic!("not refused by the disk: {other:?}"),
        };
        for i in 0..3 {
            w.append(&record(i, 100)).unwrap();
        }
        let first = refused(w.append(&record(3, 100))).expect("the segment is sealed");
        // What the disk took of the refused record is cut off again.
        assert_eq!(first.bytes, 8 + 3 * 108);
        assert_eq!(fs::metadata(&first.path).unwrap().len(), first.bytes);
        let read = read_segment(&first, &stats).unwrap();
        assert_eq!(
            read.records,
            (0..3).map(|i| record(i, 100)).collect::<Vec<_>>()
        );
        assert_eq!(read.skipped_bytes, 0);

        // The next append tries again, in a new segment. Two records of 177
        // bytes take 8 + 2 * 185 = 378: the limit cuts the third in its header.
        w.append(&record(4, 177)).unwrap();
        w.append(&record(5, 177)).unwrap();
        let second = refused(w.append(&record(6, 177))).expect("the segment is sealed");
        assert!(second.seq > first.seq);
        assert_eq!(fs::metadata(&second.path).unwrap().len(), 8 + 2 * 185);
        assert_eq!(
            read_segment(&second, &stats).unwrap().records,
            [record(4, 177), record(5, 177)]
        );
        // A record no segment can hold: the new one, left with no record, is
        // deleted rather than handed over.
        assert!(refused(w.append(&record(7, 400))).is_none());
        w.append(&record(8, 10)).unwrap();
        let third = w.seal().unwrap().unwrap();
        assert_eq!(
            read_segment(&third, &stats).unwrap().records,
            [record(8, 10)]
        );

        let files: Vec<PathBuf> = segment_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, path)| path)
            .collect();
        assert_eq!(files, [first.path, second.path, third.path]);
        assert_eq!(stats.segments.load(Ordering::Relaxed), 3);
        assert_eq!(
            stats.bytes.load(Ordering::Relaxed),
            first.bytes + second.bytes + third.bytes
        );
        assert_eq!(stats.dropped_io.load(Ordering::Relaxed), 3);
        assert_eq!(stats.corrupt_tails.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn each_process_claims_its_own_slot_and_adopts_what_others_left() {
        let root = tempfile::tempdir().unwrap();
        let first = claim(root.path()).unwrap();
        let second = claim(root.path()).unwrap();
        assert_ne!(first.dir, second.dir, "a held slot is not given twice");
        // The second process writes a segment and stops without shipping it.
        let (mut w, _, _) = open(&second.dir, SpoolLimits::default());
        w.append(b"left behind").unwrap();
        w.seal().unwrap();
        drop(w);
        drop(second);
        // A process starting now takes the free slot...
        let third = claim(root.path()).unwrap();
        assert_eq!(third.adopted, 0);
        drop(third);
        // ...and with the first one gone too, a new one finds everything.
        let (mut w, _, _) = open(&first.dir, SpoolLimits::default());
        w.append(b"mine").unwrap();
        w.seal().unwrap();
        drop(w);
        drop(first);
        let fourth = claim(root.path()).unwrap();
        assert_eq!(fourth.adopted, 1);
        let (_, found, stats) = open(&fourth.dir, SpoolLimits::default());
        let records: Vec<Vec<u8>> = found
            .iter()
            .flat_map(|s| read_segment(s, &stats).unwrap().records)
            .collect();
        assert_eq!(records, [b"mine".to_vec(), b"left behind".to_vec()]);
    }

    #[test]
    fn a_full_spool_refuses_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            segment_bytes: 1 << 20,
            max_bytes: 64,
        };
        let (mut w, _, stats) = open(dir.path(), limits);
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..10 {
            match w.append(b"0123456789") {
                Ok(_) => accepted += 1,
                Err(AppendError::Full(_)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // 8 bytes of magic, then 18 bytes per record: three fit under 64.
        assert_eq!((accepted, refused), (3, 7));
        assert_eq!(stats.dropped_full.load(Ordering::Relaxed), 7);
        // Shipping frees room again.
        let seg = w.seal().unwrap().unwrap();
        remove_segment(&seg, &stats).unwrap();
        assert!(w.append(b"0123456789").is_ok());
    }
}
