//! A real SMTP server on loopback for the alert and pipeline tests: Python's aiosmtpd
//! (`tests/support/smtp_server.py`, from the test virtualenv), which keeps each accepted message
//! as a JSON file, with STARTTLS and a required login when a test asks.
//!
//! The server exits by itself once its standard input, a pipe from this process, closes: it runs
//! as its own guard ([`super::services::Guard::direct`]), so dropping an [`Smtp`] stops it and
//! waits for it. It is ready once it has printed its port and answered with its greeting.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::services::Guard;

/// A message the SMTP server accepted.
#[derive(Debug, serde::Deserialize)]
pub struct Mail {
    /// The envelope's recipients.
    pub rcpt_tos: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The `From:` header.
    pub from: String,
    /// The plain-text body.
    pub body: String,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The user that logged in, if any.
    pub login: Option<String>,
}

/// What the SMTP server asks of its clients.
#[derive(Default)]
pub struct SmtpOptions<'a> {
    /// A certificate and key: the server offers STARTTLS and requires it.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// A user and password the server requires (over TLS).
    pub login: Option<(&'a str, &'a str)>,
}

/// `tests/support/smtp_server.py` on 127.0.0.1, stopped (and waited for) when dropped.
pub struct Smtp {
    /// Its port.
    pub port: u16,
    maildir: PathBuf,
    _guard: Guard,
}

impl Smtp {
    /// Starts one keeping its messages in a new folder under `dir`, and waits until it answers.
    pub fn start(dir: &Path, options: SmtpOptions<'_>) -> Smtp {
        let base = dir.join(format!("mail-{}", std::process::id()));
        let maildir = (1..).map(|n| base.with_extension(n.to_string())).find(|p| !p.exists()).expect("a free folder name");
        std::fs::create_dir_all(&maildir).expect("mail folder");
        let log = PathBuf::from(format!("{}.log", maildir.display()));
        let python = super::moto::python();
        let mut command = Command::new(&python);
        command.arg(super::repo_root().join("tests/support/smtp_server.py")).arg("--maildir").arg(&maildir);
        if let Some((cert, key)) = options.tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, password)) = options.login {
            command.arg("--user").arg(user).env("FLOWCTL_TEST_SMTP_PASSWORD", password);
        }
        command.stdout(Stdio::piped()).stderr(std::fs::File::create(&log).expect("create the SMTP log"));
        let mut guard = Guard::direct(command, &python.display().to_string());
        // The server prints its port once it listens; a server that dies first closes stdout.
        let mut first = String::new();
        let _ = BufReader::new(guard.take_stdout().expect("stdout")).read_line(&mut first);
        let Some(port) = first.strip_prefix("listening ").and_then(|p| p.trim().parse::<u16>().ok()) else {
            drop(guard);
            panic!(
                "the test SMTP server did not start (is aiosmtpd installed? run scripts/test.sh):\nstdout: {first}\nstderr: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        // Ready means it answers: read the 220 greeting.
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the test SMTP server");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut greeting = [0u8; 3];
        stream.read_exact(&mut greeting).expect("read the SMTP greeting");
        assert_eq!(&greeting, b"220", "the test SMTP server's greeting");
        let _ = stream.write_all(b"QUIT\r\n");
        Smtp { port, maildir, _guard: guard }
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<Mail> {
        super::files_under(&self.maildir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|f| serde_json::from_str(&std::fs::read_to_string(f).expect("read message")).expect("message JSON"))
            .collect()
    }
}
