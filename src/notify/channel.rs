//! Channels: where messages go, and how one message is put on each (the
//! request a webhook, Discord, Slack, ntfy or Apprise expects, or an email
//! over SMTP).
//!
//! A delivery either succeeds, fails in a way worth retrying (the receiver
//! is down, busy, or asked to wait: `Retry-After` is honoured), or is
//! rejected (a 4xx that will not change, a permanent SMTP error): retrying
//! a rejected message would only repeat the rejection.
//!
//! Every request carries the event's id (`X-Baton-Id` and
//! `Idempotency-Key`; emails carry it in `Message-ID`), so a receiver can
//! drop the duplicates that at-least-once delivery allows.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::event::{Event, Severity};
use crate::secrets::Secrets;

/// A channel from flows.yaml's `notify.channels`.
#[derive(Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// The least time between two messages on this channel (its rate
    /// limit).
    pub min_gap: Duration,
}

/// How a channel is reached. The URLs and tokens here are secrets (a
/// webhook URL is its own password): `Debug` shows only hosts.
#[derive(Clone, PartialEq)]
pub enum ChannelKind {
    Webhook {
        url: String,
        headers: Vec<(String, String)>,
        template: Option<Template>,
    },
    Discord {
        url: String,
    },
    Slack {
        url: String,
    },
    Ntfy {
        server: String,
        topic: String,
        token: Option<String>,
    },
    Apprise {
        url: String,
        urls: Option<String>,
        tag: Option<String>,
    },
    Email(Email),
}

#[derive(Clone, PartialEq)]
pub struct Email {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// PEM certificates to trust besides the usual roots (a relay with a
    /// certificate from a private CA).
    pub ca: Option<Vec<u8>>,
}

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain, then upgraded with STARTTLS (refused if the server cannot).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this machine.
    None,
}

impl ChannelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Apprise { .. } => "apprise",
            ChannelKind::Email(_) => "email",
        }
    }

    /// The rate limit when flows.yaml gives none: Discord allows about 30
    /// messages a minute per webhook, Slack one a second.
    pub fn default_min_gap(&self) -> Duration {
        match self {
            ChannelKind::Discord { .. } => Duration::from_secs(2),
            ChannelKind::Slack { .. } => Duration::from_secs(1),
            _ => Duration::ZERO,
        }
    }

    /// Where messages go, without paths or credentials.
    pub fn place(&self) -> String {
        let host = |u: &str| {
            reqwest::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "?".into())
        };
        match self {
            ChannelKind::Webhook { url, .. }
            | ChannelKind::Discord { url }
            | ChannelKind::Slack { url }
            | ChannelKind::Apprise { url, .. } => host(url),
            ChannelKind::Ntfy { server, .. } => host(server),
            ChannelKind::Email(e) => format!("{}:{}", e.host, e.port),
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Channel({} {} at {})",
            self.name,
            self.kind.as_str(),
            self.kind.place()
        )
    }
}

impl fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.as_str(), self.place())
    }
}

// ---------------------------------------------------------------------------
// Templates for the generic webhook.

/// A body template: JSON text with `{{field}}` placeholders, each replaced
/// by the field's value escaped for a JSON string. `{{secret.NAME}}` is the
/// only way a secret gets into a body.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Field(String),
    Secret(String),
}

/// The fields a template may name.
pub const FIELDS: [&str; 13] = [
    "id", "event", "severity", "title", "body", "text", "target", "run_id", "order", "price",
    "link", "command", "at",
];

/// Why a `template:` cannot be used; it names the wrong placeholder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("a `{{{{` is not closed: write `{{{{title}}}}`")]
    Unclosed,
    #[error("`{{{{secret.{0}}}}}` names a secret that is not declared under `secrets:`")]
    UnknownSecret(String),
    #[error("unknown placeholder `{{{{{0}}}}}`: use one of {fields}, or `{{{{secret.NAME}}}}`", fields = FIELDS.join(", "))]
    UnknownPlaceholder(String),
    #[error(
        "the template is not JSON once filled in ({0}); put placeholders inside strings, like `{{\"text\": \"{{{{title}}}}\"}}`"
    )]
    NotJson(String),
}

impl Template {
    /// Parses `text`; `secret_known` says whether a secret name is declared.
    /// The error says which placeholder is wrong.
    pub fn parse(
        text: &str,
        secret_known: impl Fn(&str) -> bool,
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_owned()));
            }
            let after = &rest[i + 2..];
            let Some(j) = after.find("}}") else {
                return Err(TemplateError::Unclosed);
            };
            let name = after[..j].trim();
            if let Some(secret) = name.strip_prefix("secret.") {
                if !secret_known(secret) {
                    return Err(TemplateError::UnknownSecret(secret.to_owned()));
                }
                parts.push(Part::Secret(secret.to_owned()));
            } else if FIELDS.contains(&name) {
                parts.push(Part::Field(name.to_owned()));
            } else {
                return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
            }
            rest = &after[j + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let t = Template { parts };
        let sample = t.render(&Event::new(super::Kind::Test, "t", "b"), &|_| {
            Some("s".into())
        });
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
            return Err(TemplateError::NotJson(e.to_string()));
        }
        Ok(t)
    }

    pub fn render(&self, e: &Event, secret: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&json_escape(&field(e, f))),
                Part::Secret(s) => out.push_str(&json_escape(&secret(s).unwrap_or_default())),
            }
        }
        out
    }
}

fn field(e: &Event, name: &str) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    match name {
        "id" => e.id.clone(),
        "event" => e.kind.as_str().to_owned(),
        "severity" => e.kind.severity().as_str().to_owned(),
        "title" => e.title.clone(),
        "body" => e.body.clone(),
        "text" => e.text(),
        "target" => opt(&e.target),
        "run_id" => e.run_id.map(|r| r.to_string()).unwrap_or_default(),
        "order" => opt(&e.order),
        "price" => opt(&e.price),
        "link" => opt(&e.link),
        "command" => opt(&e.command),
        "at" => crate::time::format(e.at),
        _ => String::new(),
    }
}

/// `s` escaped for the inside of a JSON string.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("strings always serialize");
    quoted[1..quoted.len() - 1].to_owned()
}

// ---------------------------------------------------------------------------
// Delivery.

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth trying again, after `after` if the receiver said when.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The receiver refused this message for good.
    Rejected(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Retry { why, .. } => f.write_str(why),
            Failure::Rejected(why) => write!(f, "rejected: {why}"),
        }
    }
}

/// The longest `Retry-After` honoured; beyond it, the usual backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Bodies of the chat formats are cut to what the services accept.
const DISCORD_MAX: usize = 2000;
const SLACK_MAX: usize = 3000;

/// The JSON the generic webhook sends without a template.
pub fn webhook_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "event": e.kind.as_str(),
        "severity": e.kind.severity().as_str(),
        "title": e.title,
        "body": e.body,
        "text": e.text(),
        "target": e.target,
        "run_id": e.run_id,
        "order": e.order,
        "price": e.price,
        "link": e.link,
        "command": e.command,
        "at": crate::time::format(e.at),
    })
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn ntfy_priority(s: Severity) -> u8 {
    match s {
        Severity::Failure => 5,
        Severity::Warning | Severity::Success => 4,
        Severity::Info => 3,
    }
}

impl Channel {
    /// Delivers one event. `client` is shared by every channel; `secrets`
    /// fill a template's `{{secret.NAME}}`.
    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        e: &Event,
        secrets: &Secrets,
    ) -> Result<(), Failure> {
        let (url, body, auth): (&str, serde_json::Value, Option<&str>) = match &self.kind {
            ChannelKind::Email(mail) => return send_email(mail, e).await,
            ChannelKind::Webhook {
                url,
                headers,
                template,
            } => {
                let body = match template {
                    Some(t) => t.render(e, &|n| secrets.get(n).map(str::to_owned)),
                    None => webhook_json(e).to_string(),
                };
                let mut req = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                return send(req, e).await;
            }
            ChannelKind::Discord { url } => (
                url,
                serde_json::json!({
                    "content": cut(&format!("**{}**\n{}", e.title, e.text()), DISCORD_MAX),
                    // Nothing in a message may ping @everyone.
                    "allowed_mentions": { "parse": [] },
                }),
                None,
            ),
            ChannelKind::Slack { url } => (
                url,
                serde_json::json!({
                    "text": cut(&format!("*{}*\n{}", e.title, e.text()), SLACK_MAX),
                }),
                None,
            ),
            ChannelKind::Ntfy {
                server,
                topic,
                token,
            } => {
                let mut body = serde_json::json!({
                    "topic": topic,
                    "title": e.title,
                    "message": e.text(),
                    "priority": ntfy_priority(e.kind.severity()),
                    "tags": [e.kind.as_str()],
                });
                if let Some(link) = &e.link {
                    body["click"] = link.clone().into();
                }
                (server, body, token.as_deref())
            }
            ChannelKind::Apprise { url, urls, tag } => {
                let mut body = serde_json::json!({
                    "title": e.title,
                    "body": e.text(),
                    "type": e.kind.severity().as_str(),
                });
                if let Some(u) = urls {
                    body["urls"] = u.clone().into();
                }
                if let Some(t) = tag {
                    body["tag"] = t.clone().into();
                }
                (url, body, None)
            }
        };
        let mut req = client.post(url).json(&body);
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        send(req, e).await
    }
}

async fn send(req: reqwest::RequestBuilder, e: &Event) -> Result<(), Failure> {
    let resp = req
        .header("x-baton-id", &e.id)
        .header("idempotency-key", &e.id)
        .send()
        .await
        .map_err(|err| Failure::Retry {
            // Without the URL: it may hold the channel's token.
            why: format!("cannot reach the receiver: {}", causes(&err.without_url())),
            after: None,
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let after = retry_after(resp.headers());
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let why = format!(
        "HTTP {status}{}",
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        }
    );
    let code = status.as_u16();
    if status.is_server_error() || matches!(code, 408 | 425 | 429) {
        Err(Failure::Retry { why, after })
    } else {
        Err(Failure::Rejected(why))
    }
}

/// An error and its causes, `: `-separated (reqwest's own text stops at
/// "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = c.source();
    }
    out
}

/// `Retry-After` as seconds or an HTTP date, bounded.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<f64>() {
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))?
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(SystemTime::now()).unwrap_or_default()
    };
    Some(d.min(MAX_RETRY_AFTER))
}

async fn send_email(mail: &Email, e: &Event) -> Result<(), Failure> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls as LTls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let rejected = |what: &str, err: &dyn fmt::Display| Failure::Rejected(format!("{what}: {err}"));
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|err| rejected("bad `from` address", &err))?;
    let mut b = Message::builder()
        .from(from)
        .subject(format!("[baton] {}", e.title))
        .message_id(Some(format!("<{}@baton>", e.id)))
        .header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        b = b.to(to
            .parse()
            .map_err(|err| rejected("bad `to` address", &err))?);
    }
    let msg = b
        .body(e.text())
        .map_err(|err| rejected("cannot build the email", &err))?;

    let tls = || {
        let mut b = TlsParameters::builder(mail.host.clone());
        if let Some(pem) = &mail.ca {
            b = b.add_root_certificate(
                lettre::transport::smtp::client::Certificate::from_pem(pem)
                    .map_err(|err| rejected("the `ca` certificate", &err))?,
            );
        }
        b.build().map_err(|err| rejected("TLS settings", &err))
    };
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.host)
        .port(mail.port)
        .timeout(Some(Duration::from_secs(20)));
    t = match mail.tls {
        Tls::StartTls => t.tls(LTls::Required(tls()?)),
        Tls::Tls => t.tls(LTls::Wrapper(tls()?)),
        Tls::None => t.tls(LTls::None),
    };
    if let (Some(u), Some(p)) = (&mail.username, &mail.password) {
        t = t.credentials(Credentials::new(u.clone(), p.clone()));
    }
    match t.build().send(msg).await {
        Ok(_) => Ok(()),
        Err(err) if err.is_permanent() => Err(Failure::Rejected(format!("SMTP: {err}"))),
        Err(err) => Err(Failure::Retry {
            why: format!("SMTP: {err}"),
            after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Kind;

    #[test]
    fn templates_escape_values_and_name_secrets_explicitly() {
        let t = Template::parse(r#"{"text": "{{title}}", "key": "{{secret.api}}"}"#, |n| {
            n == "api"
        })
        .unwrap();
        let e = Event::new(Kind::Test, "a \"quoted\"\nline", "b");
        let out = t.render(&e, &|n| (n == "api").then(|| "k3y".to_owned()));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "a \"quoted\"\nline");
        assert_eq!(v["key"], "k3y");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let err = |t: &str| Template::parse(t, |n| n == "api").unwrap_err().to_string();
        assert!(err(r#"{"a": "{{nope}}"}"#).contains("unknown placeholder `{{nope}}`"));
        assert!(err(r#"{"a": "{{secret.other}}"}"#).contains("not declared"));
        assert!(err(r#"{"a": {{title}}}"#).contains("not JSON"));
        assert!(err(r#"{"a": "{{title"}"#).contains("not closed"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(2500)));
        h.insert("retry-after", "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", soon.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn debug_shows_no_url_or_token() {
        let c = Channel {
            name: "ops".into(),
            kind: ChannelKind::Discord {
                url: "https://discord.com/api/webhooks/1/SECRET-TOKEN".into(),
            },
            min_gap: Duration::ZERO,
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("discord.com") && !shown.contains("SECRET"));
    }
}
