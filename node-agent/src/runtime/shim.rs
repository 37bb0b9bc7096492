//! The per-container supervisor (`__shim`), like containerd-shim or conmon: it creates
//! and starts the container through libcontainer, owns its stdout/stderr (copied to
//! `log` in the CRI format), reaps it, and records how it ended in `exit.json`. It runs
//! in its own process group, so the agent can die and come back without touching it.
//!
//! Also the `__exec` helper: a process joined into a running container.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::container::{ExitRecord, StartRecord, now_ns, process_start_ticks, write_atomically};

/// Longest log record; longer lines are split into partial records (containerd's).
const MAX_LOG_LINE: usize = 16 * 1024;

/// `__shim CONTAINER_DIR STATE_ROOT ID`.
pub fn main(args: &[String]) -> ExitCode {
    let [dir, state_root, id] = args else {
        eprintln!("usage: __shim CONTAINER_DIR STATE_ROOT ID");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    // libcontainer's own diagnostics go to shim.log (stderr) at SKIFF_SHIM_LOG's level.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let started_at_ns = now_ns();
    match supervise(&dir, Path::new(state_root), id) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Never started: the agent shows StartError with this message.
            let record = ExitRecord {
                exit_code: 128,
                signal: None,
                oom_killed: false,
                reason: "StartError".to_owned(),
                message,
                started_at_ns,
                finished_at_ns: now_ns(),
            };
            let _ = write_atomically(&dir.join("exit.json"), &record);
            ExitCode::FAILURE
        }
    }
}

/// Creates, starts and waits for the container; `Err` only when it never started.
fn supervise(dir: &Path, state_root: &Path, id: &str) -> Result<(), String> {
    // Orphans of the container's processes would otherwise go to init.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let log = Arc::new(LogWriter {
        file: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log"))
                .map_err(|e| format!("opening the log: {e}"))?,
        ),
    });
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
        .map_err(|e| format!("reading config.json: {e}"))?;
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.display().to_string())
        .unwrap_or_default();

    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| format!("state root: {e}"))?
        .with_stdin(OwnedFd::from(null))
        .with_stdout(out_write)
        .with_stderr(err_write)
        .validate_id()
        .map_err(|e| format!("container id: {e}"))?
        .as_init(dir)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("creating the container: {e}"))?;
    if let Err(error) = container.start() {
        let _ = container.delete(true);
        return Err(format!("starting the container: {error}"));
    }
    let Some(pid) = container.pid() else {
        let _ = container.delete(true);
        return Err("the container has no process".to_owned());
    };
    let started = StartRecord {
        shim_pid: std::process::id(),
        shim_start: process_start_ticks(std::process::id()).unwrap_or(0),
        pid: pid.as_raw().unsigned_abs(),
        pid_start: process_start_ticks(pid.as_raw().unsigned_abs()).unwrap_or(0),
        started_at_ns: now_ns(),
    };
    let copiers = [(out_read, "stdout"), (err_read, "stderr")].map(|(pipe, stream)| {
        let log = log.clone();
        std::thread::spawn(move || log.copy(File::from(pipe), stream))
    });
    if let Err(error) = write_atomically(&dir.join("state.json"), &started) {
        if let Ok(kill) = libcontainer::signal::Signal::try_from(9) {
            let _ = container.kill(kill, true);
        }
        let _ = container.delete(true);
        return Err(format!("writing state.json: {error}"));
    }
    let status = wait_for(Pid::from_raw(pid.as_raw()));
    for copier in copiers {
        let _ = copier.join();
    }
    let oom_killed = super::cgroups::oom_kills(Path::new(super::cgroups::ROOT), &cgroups_path) > 0;
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, signal, _) => (128 + signal as i32, Some(signal as i32)),
        _ => (255, None),
    };
    let reason = if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let record = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        reason: reason.to_owned(),
        message: String::new(),
        started_at_ns: started.started_at_ns,
        finished_at_ns: now_ns(),
    };
    if let Err(error) = container.delete(true) {
        eprintln!("deleting container {id}: {error}");
    }
    write_atomically(&dir.join("exit.json"), &record)
        .map_err(|e| format!("writing exit.json: {e}"))?;
    Ok(())
}

/// Waits for `pid` (the container's init, our child), reaping other children that
/// get reparented to us on the way.
fn wait_for(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) if p == pid => {
                return status;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                // No children left: the init was reaped elsewhere (should not happen).
                return WaitStatus::Exited(pid, 255);
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Writes container output to the log file in the CRI format:
/// `<RFC 3339 time> <stdout|stderr> <F|P> <content>\n`.
struct LogWriter {
    file: Mutex<File>,
}

impl LogWriter {
    /// Copies `pipe` to the log until EOF, one record per line; lines longer than
    /// [`MAX_LOG_LINE`] and an unterminated last line become partial (`P`) records.
    fn copy(&self, pipe: File, stream: &str) {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut line: Vec<u8> = Vec::new();
        loop {
            let buffer = match reader.fill_buf() {
                Ok(buffer) => buffer,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if buffer.is_empty() {
                if !line.is_empty() {
                    self.record(stream, false, &line);
                }
                return;
            }
            let room = MAX_LOG_LINE - line.len();
            let window = &buffer[..buffer.len().min(room)];
            if let Some(end) = window.iter().position(|b| *b == b'\n') {
                line.extend_from_slice(&window[..end]);
                reader.consume(end + 1);
                self.record(stream, true, &line);
                line.clear();
            } else {
                let taken = window.len();
                line.extend_from_slice(window);
                reader.consume(taken);
                if line.len() == MAX_LOG_LINE {
                    self.record(stream, false, &line);
                    line.clear();
                }
            }
        }
    }

    fn record(&self, stream: &str, full: bool, content: &[u8]) {
        let time = super::container::timestamp(std::time::SystemTime::now());
        let mut record = Vec::with_capacity(content.len() + 48);
        let _ = write!(
            record,
            "{time:.9} {stream} {} ",
            if full { 'F' } else { 'P' }
        );
        record.extend_from_slice(content);
        record.push(b'\n');
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(&record);
        }
    }
}

/// `__exec STATE_ROOT ID COMMAND...`: runs COMMAND in the running container with
/// this process's stdin/stdout/stderr, and exits with its exit code (128 + signal
/// when it was killed).
pub fn exec_main(args: &[String]) -> ExitCode {
    let [state_root, id, command @ ..] = args else {
        eprintln!("usage: __exec STATE_ROOT ID COMMAND...");
        return ExitCode::from(2);
    };
    if command.is_empty() {
        eprintln!("exec needs a command");
        return ExitCode::from(2);
    }
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(state_root)
        .and_then(|b| {
            b.as_tenant()
                .with_detach(false)
                .with_container_args(command.to_vec())
                .build()
        });
    let pid = match built {
        Ok(pid) => pid,
        Err(error) => {
            eprintln!("exec failed: {error}");
            return ExitCode::from(126);
        }
    };
    let code = match wait_for(Pid::from_raw(pid.as_raw())) {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 255,
    };
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(input: &[u8]) -> Vec<(String, String, String)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let writer = LogWriter {
            file: Mutex::new(File::create(&path).expect("log")),
        };
        let source = dir.path().join("input");
        std::fs::write(&source, input).expect("input");
        writer.copy(File::open(&source).expect("open"), "stdout");
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let time = parts.next().expect("time").to_owned();
                assert!(time.ends_with('Z') && time.contains('T'), "{time}");
                let stream = parts.next().expect("stream").to_owned();
                let tag = parts.next().expect("tag").to_owned();
                (stream, tag, parts.next().unwrap_or("").to_owned())
            })
            .collect()
    }

    #[test]
    fn lines_become_cri_records() {
        let records = copied(b"hello\n\nworld");
        assert_eq!(
            records,
            vec![
                ("stdout".into(), "F".into(), "hello".into()),
                ("stdout".into(), "F".into(), String::new()),
                ("stdout".into(), "P".into(), "world".into()),
            ]
        );
    }

    #[test]
    fn long_lines_are_split_into_partials() {
        let mut input = vec![b'x'; MAX_LOG_LINE * 2 + 10];
        input.push(b'\n');
        let records = copied(&input);
        let tags: Vec<&str> = records.iter().map(|(_, t, _)| t.as_str()).collect();
        assert_eq!(tags, ["P", "P", "F"]);
        assert_eq!(records[0].2.len(), MAX_LOG_LINE);
        assert_eq!(records[2].2.len(), 10);
    }
}
