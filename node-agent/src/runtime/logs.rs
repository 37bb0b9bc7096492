//! Reading container logs (`containers/<id>/log`, CRI format, written by the
//! supervisor) as `kubectl logs` shows them: partial records joined into lines,
//! `--tail` found by reading the file backwards, `--since`, `--timestamps`,
//! `--limit-bytes`, and `--follow` until the container stops.

use std::future::Future;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often a follower looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// Largest chunk sent at once.
const CHUNK: usize = 64 * 1024;

/// What to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading new records until the container stops.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only records written at or after this time.
    pub since: Option<SystemTime>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

impl From<&skiff_proto::node::LogsRequest> for LogOptions {
    fn from(request: &skiff_proto::node::LogsRequest) -> Self {
        Self {
            follow: request.follow,
            tail_lines: u64::try_from(request.tail_lines).ok(),
            since: u64::try_from(request.since_seconds)
                .ok()
                .filter(|s| *s > 0)
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            timestamps: request.timestamps,
            limit_bytes: u64::try_from(request.limit_bytes).ok().filter(|l| *l > 0),
        }
    }
}

/// The log at `path` as a stream of chunks; with `follow`, it ends once `stop`
/// resolves and what was written before is sent.
pub fn read(
    path: PathBuf,
    options: LogOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        if let Err(error) = pump(path, options, stop, &sender).await {
            let _ = sender.send(Err(error)).await;
        }
    });
    ReceiverStream::new(receiver)
}

/// One parsed record.
struct Record<'a> {
    time: &'a str,
    full: bool,
    content: &'a [u8],
}

/// Parses `<time> <stream> <F|P> <content>` (without the newline).
fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Record {
        time,
        full,
        content: parts.next().unwrap_or_default(),
    })
}

/// Sends `data`, buffered into chunks; false when the receiver is gone or the limit
/// is reached.
struct Output<'a> {
    sender: &'a mpsc::Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
    remaining: Option<u64>,
}

impl Output<'_> {
    async fn line(&mut self, time: &str, timestamps: bool, content: &[u8]) -> bool {
        if timestamps {
            self.buffer.extend_from_slice(time.as_bytes());
            self.buffer.push(b' ');
        }
        self.buffer.extend_from_slice(content);
        self.buffer.push(b'\n');
        if let Some(remaining) = self.remaining {
            let limit = usize::try_from(remaining).unwrap_or(usize::MAX);
            if self.buffer.len() >= limit {
                self.buffer.truncate(limit);
                self.flush().await;
                return false;
            }
        }
        if self.buffer.len() >= CHUNK {
            return self.flush().await;
        }
        true
    }

    async fn flush(&mut self) -> bool {
        if self.buffer.is_empty() {
            return true;
        }
        let data = std::mem::take(&mut self.buffer);
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(data.len() as u64);
        }
        self.sender.send(Ok(Bytes::from(data))).await.is_ok()
    }
}

async fn pump(
    path: PathBuf,
    options: LogOptions,
    stop: impl Future<Output = ()> + Send + 'static,
    sender: &mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let mut stop = Box::pin(stop);
    let mut stopped = !options.follow;
    // Wait for the file when following; none means no output otherwise.
    let file = loop {
        match tokio::fs::File::open(&path).await {
            Ok(file) => break file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if stopped {
                    return Ok(());
                }
                tokio::select! {
                    () = &mut stop => stopped = true,
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
            Err(error) => return Err(error),
        }
    };
    let mut file = file;
    if let Some(lines) = options.tail_lines {
        let offset = tail_offset(&mut file, lines).await?;
        file.seek(SeekFrom::Start(offset)).await?;
    }
    let since = options.since.map(crate::runtime::container::timestamp);
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut output = Output {
        sender,
        buffer: Vec::new(),
        remaining: options.limit_bytes,
    };
    let mut record = Vec::new();
    let mut line = Vec::new();
    loop {
        let read = reader.read_until(b'\n', &mut record).await?;
        if read > 0 && record.last() == Some(&b'\n') {
            record.pop();
            if let Some(parsed) = parse(&record) {
                let wanted = since.is_none_or(|since| {
                    parsed
                        .time
                        .parse::<k8s_openapi::jiff::Timestamp>()
                        .is_ok_and(|t| t >= since)
                });
                if wanted {
                    line.extend_from_slice(parsed.content);
                    if parsed.full {
                        let go_on = output.line(parsed.time, options.timestamps, &line).await;
                        line.clear();
                        if !go_on {
                            return Ok(());
                        }
                    }
                }
            }
            record.clear();
            continue;
        }
        // End of the file (a torn last record stays in `record` until completed).
        if !output.flush().await || stopped {
            return Ok(());
        }
        tokio::select! {
            () = &mut stop => stopped = true,
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

/// The offset where the last `lines` full lines start, found by reading backwards in
/// blocks (a line is any number of partial records and one full record).
async fn tail_offset(file: &mut tokio::fs::File, lines: u64) -> std::io::Result<u64> {
    let length = file.metadata().await?.len();
    if lines == 0 {
        return Ok(length);
    }
    // The record being read, backwards; `terminated` once its newline was seen (a
    // torn last record has none and is not a line).
    let mut reversed: Vec<u8> = Vec::new();
    let mut terminated = false;
    let mut full_seen = 0u64;
    let mut position = length;
    while position > 0 {
        let start = position.saturating_sub(CHUNK as u64);
        let mut block = vec![0; usize::try_from(position - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut block).await?;
        for (index, byte) in block.iter().enumerate().rev() {
            if *byte != b'\n' {
                reversed.push(*byte);
                continue;
            }
            let record_start = start + index as u64 + 1;
            if terminated && is_full_record(&reversed) {
                full_seen += 1;
                if full_seen > lines {
                    return Ok(record_start + reversed.len() as u64 + 1);
                }
            }
            reversed.clear();
            terminated = true;
        }
        position = start;
    }
    if terminated && is_full_record(&reversed) && full_seen + 1 > lines {
        return Ok(reversed.len() as u64 + 1);
    }
    Ok(0)
}

/// Whether a record (given backwards) is a full (`F`) one.
fn is_full_record(reversed: &[u8]) -> bool {
    let record: Vec<u8> = reversed.iter().rev().copied().collect();
    parse(&record).is_some_and(|r| r.full)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn record(time: u32, stream: &str, tag: &str, content: &str) -> String {
        format!("2026-11-24T00:00:{time:02}.000000001Z {stream} {tag} {content}\n")
    }

    async fn collect(path: PathBuf, options: LogOptions) -> String {
        let chunks: Vec<_> = read(path, options, async {}).collect().await;
        chunks
            .into_iter()
            .map(|c| String::from_utf8(c.expect("chunk").to_vec()).expect("utf8"))
            .collect()
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[tokio::test]
    async fn records_become_lines_with_partials_joined() {
        let text = [
            record(1, "stdout", "F", "one"),
            record(2, "stderr", "P", "tw"),
            record(2, "stderr", "F", "o"),
            "garbage without fields\n".to_owned(),
            record(3, "stdout", "F", ""),
            record(4, "stdout", "P", "torn"),
        ]
        .concat();
        let (_dir, path) = write(&format!("{text}2026-11-24T00:00:05Z stdout F unfinished"));
        assert_eq!(
            collect(path.clone(), LogOptions::default()).await,
            "one\ntwo\n\n"
        );
        let stamped = collect(
            path,
            LogOptions {
                timestamps: true,
                ..LogOptions::default()
            },
        )
        .await;
        assert!(
            stamped.starts_with("2026-11-24T00:00:01.000000001Z one\n"),
            "{stamped}"
        );
    }

    #[tokio::test]
    async fn tail_counts_full_lines_from_the_end() {
        let text: String = (0..10)
            .flat_map(|i| {
                [
                    record(i, "stdout", "P", "part-"),
                    record(i, "stdout", "F", &format!("{i}")),
                ]
            })
            .collect();
        let (_dir, path) = write(&text);
        for (lines, expected) in [
            (0, String::new()),
            (1, "part-9\n".to_owned()),
            (3, "part-7\npart-8\npart-9\n".to_owned()),
            (100, (0..10).map(|i| format!("part-{i}\n")).collect()),
        ] {
            let tail = collect(
                path.clone(),
                LogOptions {
                    tail_lines: Some(lines),
                    ..LogOptions::default()
                },
            )
            .await;
            assert_eq!(tail, expected, "tail {lines}");
        }
    }

    #[tokio::test]
    async fn tail_reads_big_files_backwards_across_blocks() {
        let long = "x".repeat(50_000);
        let text: String = (0..40)
            .map(|i| record(i % 60, "stdout", "F", &format!("{i}-{long}")))
            .collect();
        let (_dir, path) = write(&text);
        let tail = collect(
            path,
            LogOptions {
                tail_lines: Some(2),
                ..LogOptions::default()
            },
        )
        .await;
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("38-") && lines[1].starts_with("39-"));
    }

    #[tokio::test]
    async fn since_and_limit_bytes_filter() {
        let text: String = (0..5)
            .map(|i| record(i, "stdout", "F", &format!("line{i}")))
            .collect();
        let (_dir, path) = write(&text);
        let since = "2026-11-24T00:00:03Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .expect("time");
        let since = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(since.as_second()).expect("positive"));
        let recent = collect(
            path.clone(),
            LogOptions {
                since: Some(since),
                ..LogOptions::default()
            },
        )
        .await;
        assert_eq!(recent, "line3\nline4\n");
        let limited = collect(
            path,
            LogOptions {
                limit_bytes: Some(8),
                ..LogOptions::default()
            },
        )
        .await;
        assert_eq!(limited, "line0\nli");
    }

    #[tokio::test]
    async fn follow_sees_appended_records_until_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut stream = Box::pin(read(
            path.clone(),
            LogOptions {
                follow: true,
                ..LogOptions::default()
            },
            async move {
                let _ = stopped.await;
            },
        ));
        // The file does not exist yet.
        std::fs::write(&path, record(1, "stdout", "F", "first")).expect("write");
        let chunk = stream.next().await.expect("chunk").expect("ok");
        assert_eq!(chunk, "first\n");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        use std::io::Write;
        file.write_all(b"2026-11-24T00:00:02Z stdout F sec")
            .expect("torn");
        file.write_all(b"ond\n").expect("rest");
        let chunk = stream.next().await.expect("chunk").expect("ok");
        assert_eq!(chunk, "second\n");
        stop.send(()).expect("stop");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            collect(dir.path().join("nope"), LogOptions::default()).await,
            ""
        );
    }
}
