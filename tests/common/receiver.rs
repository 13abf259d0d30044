//! Local receivers for notifications, on 127.0.0.1 and port 0, stopped
//! when dropped: an HTTP endpoint that records every request (the webhook,
//! Discord, Slack, ntfy and Apprise formats all arrive here, by path) and
//! can be told to be down, and a small SMTP server that records
//! every email.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
    pub at: Instant,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The event id baton sent.
    pub(crate) fn id(&self) -> &str {
        self.header("x-baton-id").unwrap_or_default()
    }

    pub(crate) fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    changed: Notify,
    /// The status to answer (200 when up).
    status: AtomicU16,
    retry_after: Mutex<Option<String>>,
}

/// An HTTP receiver.
pub(crate) struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn record(State(s): State<Arc<Shared>>, req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let status = s.status.load(Ordering::SeqCst);
    s.seen.lock().unwrap().push(Seen {
        path,
        headers,
        body,
        status,
        at: Instant::now(),
    });
    s.changed.notify_waiters();
    let code = StatusCode::from_u16(status).unwrap();
    let mut resp = (code, "ok").into_response();
    if let Some(r) = s.retry_after.lock().unwrap().clone() {
        resp.headers_mut().insert("retry-after", r.parse().unwrap());
    }
    resp
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let shared = Arc::new(Shared {
            status: AtomicU16::new(200),
            ..Shared::default()
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Receiver { url, shared, stop }
    }

    /// Answers `status` from now on (503: down; 200: up again).
    pub(crate) fn answer(&self, status: u16, retry_after: Option<&str>) {
        self.shared.status.store(status, Ordering::SeqCst);
        *self.shared.retry_after.lock().unwrap() = retry_after.map(str::to_owned);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits (woken by each request, bounded) until `done` holds for what
    /// was seen; panics with what was seen after `limit`.
    #[track_caller]
    pub(crate) fn wait_until<'a>(
        &'a self,
        limit: Duration,
        done: impl Fn(&[Seen]) -> bool + 'a,
    ) -> impl Future<Output = Vec<Seen>> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let changed = self.shared.changed.notified();
                let seen = self.seen();
                if done(&seen) {
                    return seen;
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    let seen = self.seen();
                    if done(&seen) {
                        return seen;
                    }
                    panic!(
                        "{caller}: not seen within {limit:?}; seen: {:#?}",
                        seen.iter()
                            .map(|s| format!("{} {} {}", s.status, s.path, s.body))
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}

/// Whether `seen` holds a delivered request with event id `id`.
pub(crate) fn delivered(seen: &[Seen], id: &str) -> bool {
    seen.iter().any(|s| s.delivered() && s.id() == id)
}

/// One email as the SMTP server received it.
#[derive(Clone, Debug)]
pub(crate) struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, as sent after DATA.
    pub data: String,
    /// The `AUTH PLAIN` credentials, decoded, if the client logged in.
    pub auth: Option<String>,
    /// Whether the message came over TLS (STARTTLS or from the first byte).
    pub tls: bool,
}

/// How the SMTP server secures its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SmtpTls {
    None,
    /// Plain, upgraded by `STARTTLS` (which it offers).
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// A certificate authority of the test's own and a certificate it signed
/// for 127.0.0.1 and localhost: the server's TLS, and the PEM a client
/// must trust.
pub(crate) struct TestCa {
    pub ca_pem: String,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "baton test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        TestCa {
            ca_pem: ca.pem(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

/// A plain SMTP server (no TLS: baton allows `tls: none` to loopback only)
/// that accepts every message.
pub(crate) struct Smtp {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Smtp {
    pub(crate) async fn start() -> Smtp {
        Smtp::start_with(SmtpTls::None, None).await
    }

    /// A server that secures its connections as `tls` says, with `ca`'s
    /// certificate.
    pub(crate) async fn start_with(tls: SmtpTls, ca: Option<&TestCa>) -> Smtp {
        let acceptor = ca.map(|c| c.acceptor.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (m, c, s) = (mails.clone(), changed.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    () = s.cancelled() => return,
                };
                let Ok((stream, _)) = conn else { continue };
                let (m, c, acceptor) = (m.clone(), c.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match (tls, acceptor) {
                        (SmtpTls::Implicit, Some(a)) => {
                            if let Ok(s) = a.accept(stream).await {
                                let _ = session(s, m, c, false, true, true).await;
                            }
                        }
                        (SmtpTls::StartTls, Some(a)) => {
                            let plain =
                                session(stream, m.clone(), c.clone(), true, false, true).await;
                            if let Ok(Ended::Upgrade(s)) = plain
                                && let Ok(s) = a.accept(s).await
                            {
                                let _ = session(s, m, c, false, true, false).await;
                            }
                        }
                        _ => {
                            let _ = session(stream, m, c, false, false, true).await;
                        }
                    }
                });
            }
        });
        Smtp {
            port,
            mails,
            changed,
            stop,
        }
    }

    pub(crate) fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits (woken by each mail, bounded) until `n` mails arrived.
    pub(crate) async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.mails().len() >= n {
                return self.mails();
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "{n} mail(s) not received within {limit:?}: {:?}",
                self.mails()
            );
        }
    }
}

/// How a conversation ended: the client quit or left, or asked for
/// `STARTTLS` (the caller upgrades the stream and goes on).
enum Ended<S> {
    Done,
    Upgrade(S),
}

/// One SMTP conversation. With `offer_starttls`, `STARTTLS` is offered;
/// after the upgrade the client says EHLO again, without a new greeting
/// (RFC 3207).
async fn session<S>(
    stream: S,
    mails: Arc<Mutex<Vec<Mail>>>,
    changed: Arc<Notify>,
    offer_starttls: bool,
    tls: bool,
    greet: bool,
) -> std::io::Result<Ended<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use base64::Engine as _;
    let mut r = BufReader::new(stream);
    if greet {
        r.get_mut()
            .write_all(b"220 localhost ESMTP test\r\n")
            .await?;
    }
    let mut mail = Mail {
        from: String::new(),
        to: Vec::new(),
        data: String::new(),
        auth: None,
        tls,
    };
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(Ended::Done);
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let w = r.get_mut();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let offer = if offer_starttls {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            w.write_all(
                format!("250-localhost\r\n{offer}250-AUTH PLAIN\r\n250 8BITMIME\r\n").as_bytes(),
            )
            .await?;
        } else if upper == "STARTTLS" {
            if !offer_starttls {
                w.write_all(b"502 not offered\r\n").await?;
                continue;
            }
            w.write_all(b"220 Ready to start TLS\r\n").await?;
            return Ok(Ended::Upgrade(r.into_inner()));
        } else if let Some(creds) = upper.strip_prefix("AUTH PLAIN ").map(|_| &cmd[11..]) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(creds.trim())
                .unwrap_or_default();
            mail.auth = Some(
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .trim()
                    .to_owned(),
            );
            w.write_all(b"235 2.7.0 Authentication successful\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..].trim().to_owned();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd[8..].trim().to_owned());
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(Ended::Done);
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            mail.data = data;
            mails.lock().unwrap().push(mail.clone());
            changed.notify_waiters();
            r.get_mut().write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 Bye\r\n").await?;
            return Ok(Ended::Done);
        } else {
            w.write_all(b"250 OK\r\n").await?;
        }
    }
}
