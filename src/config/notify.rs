//! flows.yaml's `notify:` section resolved into a [`NotifyConfig`] (the
//! second pass; its schema is in `raw` with every other section's), each
//! problem located.
//!
//! Values that are credentials (webhook URLs, tokens, passwords) take a
//! string, with `${VAR}` expanded as elsewhere, or `{ secret: NAME }`
//! naming a secret declared under `secrets:`. Either way they are masked in
//! logs and errors, like every secret.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_saphyr::Spanned;

use crate::notify::channel::{Channel, ChannelKind, Email, Template, Tls};
use crate::notify::{Kind, NotifyConfig, Rule};

use super::raw::{Cred, OneOrMany, RawChannel, RawNotify, RawSecret};
use super::resolve::{Resolver, at};

const TYPES: &str = "webhook, discord, slack, ntfy, apprise or email";

impl Resolver<'_> {
    /// A credential's value; a problem when its secret is not declared or
    /// not set.
    fn cred(
        &mut self,
        c: &Spanned<Cred>,
        secrets: &BTreeMap<String, Spanned<RawSecret>>,
        values: &BTreeMap<String, String>,
    ) -> String {
        match &c.value {
            Cred::Text(t) => self.expand_str(t, at(c)),
            Cred::Secret(name) => {
                if !secrets.contains_key(name) {
                    self.problem(
                        at(c),
                        format!("`{{ secret: {name} }}` names a secret that is not declared under `secrets:`"),
                    );
                }
                values.get(name).cloned().unwrap_or_default()
            }
        }
    }

    fn http_url(&mut self, what: &str, url: &str, at: Option<(u32, u32)>) {
        let ok =
            reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "http" || u.scheme() == "https");
        if !ok {
            // Never echo the URL: it may hold a token.
            self.problem(at, format!("{what} must be an http:// or https:// URL"));
        }
    }

    pub(super) fn notify(
        &mut self,
        raw: &RawNotify,
        secrets: &BTreeMap<String, Spanned<RawSecret>>,
        values: &BTreeMap<String, String>,
        dashboard: Option<std::net::SocketAddr>,
    ) -> NotifyConfig {
        let d = NotifyConfig::default();
        let mut channels = BTreeMap::new();
        for (name, c) in &raw.channels {
            if let Some(ch) = self.channel(name, c, secrets, values) {
                channels.insert(name.clone(), Arc::new(ch));
            }
        }
        if raw.channels.is_empty() {
            self.problem(
                None,
                "`notify:` has no channels: add one under `notify.channels`, or remove the section"
                    .into(),
            );
        }
        let mut rules = Vec::new();
        for r in &raw.rules {
            let list = |v: &OneOrMany| match v {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            let mut events = BTreeSet::new();
            for e in list(&r.value.events) {
                if e == "*" || e == "all" {
                    events.extend(Kind::ALL);
                } else if let Some(k) = Kind::parse(&e) {
                    events.insert(k);
                } else {
                    let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    self.problem(
                        at(r),
                        format!(
                            "unknown event `{e}` in a notify rule: use {} or `*`",
                            known.join(", ")
                        ),
                    );
                }
            }
            let chans = list(&r.value.channels);
            for c in &chans {
                if !raw.channels.contains_key(c) {
                    let known: Vec<_> = raw.channels.keys().map(|k| format!("`{k}`")).collect();
                    self.problem(
                        at(r),
                        format!("a notify rule sends to channel `{c}`, which is not under `notify.channels` (defined: {})", known.join(", ")),
                    );
                }
            }
            rules.push(Rule {
                events,
                channels: chans,
                min_interval: r.value.min_interval.as_ref().map(|d| d.0),
            });
        }
        let positive = |r: &mut Self, v: &Option<Spanned<i64>>, what: &str, max: i64| {
            v.as_ref().and_then(|n| {
                if (1..=max).contains(&n.value) {
                    Some(n.value)
                } else {
                    r.problem(
                        at(n),
                        format!("`notify.{what}` must be between 1 and {max}"),
                    );
                    None
                }
            })
        };
        let failures_in_a_row = positive(self, &raw.failures_in_a_row, "failures_in_a_row", 1_000)
            .map_or(d.failures_in_a_row, |n| n as u32);
        let max_messages = positive(self, &raw.max_messages, "max_messages", 1_000_000)
            .map_or(d.max_messages, |n| n as usize);
        let retry = match &raw.retry {
            Some(r) if r.first.0 > r.max.0 => {
                self.problem(
                    None,
                    "`notify.retry.first` is longer than `notify.retry.max`".into(),
                );
                d.retry
            }
            Some(r) => (r.first.0, r.max.0),
            None => d.retry,
        };
        let link = match &raw.link {
            Some(l) => {
                let url = self.expand_str(&l.value, at(l));
                self.http_url("`notify.link`", &url, at(l));
                Some(url)
            }
            None => dashboard.map(|a| format!("http://{a}/")),
        };
        NotifyConfig {
            channels,
            rules,
            failures_in_a_row,
            max_messages,
            max_age: raw.max_age.as_ref().map_or(d.max_age, |m| m.0),
            retry,
            link,
        }
    }

    fn channel(
        &mut self,
        name: &str,
        c: &Spanned<RawChannel>,
        secrets: &BTreeMap<String, Spanned<RawSecret>>,
        values: &BTreeMap<String, String>,
    ) -> Option<Channel> {
        let where_ = at(c);
        let c = &c.value;
        let required = |r: &mut Self, v: Option<&Spanned<Cred>>, field: &str| -> String {
            if let Some(v) = v {
                r.cred(v, secrets, values)
            } else {
                r.problem(
                    where_,
                    format!("notify channel `{name}` ({}) needs `{field}`", c.kind.value),
                );
                String::new()
            }
        };
        let text = |r: &mut Self, v: &Option<Spanned<String>>| {
            v.as_ref().map(|s| r.expand_str(&s.value, at(s)))
        };
        let url_of = |r: &mut Self, v: Option<&Spanned<Cred>>, field: &str| {
            let url = required(r, v, field);
            if !url.is_empty() {
                r.http_url(
                    &format!("notify channel `{name}`'s `{field}`"),
                    &url,
                    v.and_then(at),
                );
            }
            url
        };
        let kind = match c.kind.value.as_str() {
            "webhook" => {
                let url = url_of(self, c.url.as_ref(), "url");
                let headers = c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), self.cred(v, secrets, values)))
                    .collect();
                let template = c.template.as_ref().and_then(|t| {
                    Template::parse(&t.value, |s| secrets.contains_key(s))
                        .map_err(|e| {
                            self.problem(at(t), format!("notify channel `{name}`'s template: {e}"));
                        })
                        .ok()
                });
                ChannelKind::Webhook {
                    url,
                    headers,
                    template,
                }
            }
            "discord" => ChannelKind::Discord {
                url: url_of(self, c.url.as_ref(), "url"),
            },
            "slack" => ChannelKind::Slack {
                url: url_of(self, c.url.as_ref(), "url"),
            },
            "ntfy" => {
                let server = text(self, &c.server).unwrap_or_else(|| "https://ntfy.sh".into());
                self.http_url(
                    &format!("notify channel `{name}`'s `server`"),
                    &server,
                    c.server.as_ref().and_then(at),
                );
                let topic = text(self, &c.topic).unwrap_or_default();
                if topic.is_empty() || topic.contains('/') {
                    self.problem(
                        where_,
                        format!(
                            "notify channel `{name}` (ntfy) needs a `topic` (one word, no `/`)"
                        ),
                    );
                }
                ChannelKind::Ntfy {
                    server,
                    topic,
                    token: c.token.as_ref().map(|t| self.cred(t, secrets, values)),
                }
            }
            "apprise" => ChannelKind::Apprise {
                url: url_of(self, c.url.as_ref(), "url"),
                urls: c.urls.as_ref().map(|u| self.cred(u, secrets, values)),
                tag: text(self, &c.tag),
            },
            "email" => self.email(name, c, where_, secrets, values),
            other => {
                self.problem(
                    at(&c.kind),
                    format!("notify channel `{name}` has type `{other}`: use {TYPES}"),
                );
                return None;
            }
        };
        let min_gap = c
            .min_gap
            .as_ref()
            .map_or_else(|| kind.default_min_gap(), |g| g.0);
        Some(Channel {
            name: name.to_owned(),
            kind,
            min_gap,
        })
    }

    /// An `email` channel: the SMTP server, its TLS, the sender and the
    /// recipients, each address checked.
    fn email(
        &mut self,
        name: &str,
        c: &RawChannel,
        where_: Option<(u32, u32)>,
        secrets: &BTreeMap<String, Spanned<RawSecret>>,
        values: &BTreeMap<String, String>,
    ) -> ChannelKind {
        let host = self.text(c.host.as_ref()).unwrap_or_default();
        if host.is_empty() {
            self.problem(
                where_,
                format!("notify channel `{name}` (email) needs `host` (the SMTP server)"),
            );
        }
        let tls = match c.tls.as_ref().map(|t| (t.value.as_str(), at(t))) {
            None | Some(("starttls", _)) => Tls::StartTls,
            Some(("tls", _)) => Tls::Tls,
            Some(("none", w)) => {
                if !(host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()))
                {
                    self.problem(w, format!("notify channel `{name}`: `tls: none` sends the password and messages in clear, so it is only allowed to a relay on this machine (localhost), not `{host}`"));
                }
                Tls::None
            }
            Some((other, w)) => {
                self.problem(
                    w,
                    format!("notify channel `{name}`: tls `{other}` is not starttls, tls or none"),
                );
                Tls::StartTls
            }
        };
        let port = c.port.as_ref().map_or(
            match tls {
                Tls::StartTls => 587,
                Tls::Tls => 465,
                Tls::None => 25,
            },
            |p| p.0,
        );
        let username = c.username.as_ref().map(|u| self.cred(u, secrets, values));
        let password = c.password.as_ref().map(|p| self.cred(p, secrets, values));
        if username.is_some() != password.is_some() {
            self.problem(
                where_,
                format!("notify channel `{name}`: give both `username` and `password`, or neither"),
            );
        }
        let from = self.text(c.from.as_ref()).unwrap_or_default();
        let mailbox = |r: &mut Self, a: &str, w| {
            if a.parse::<lettre::message::Mailbox>().is_err() {
                r.problem(
                    w,
                    format!("notify channel `{name}`: `{a}` is not an email address"),
                );
            }
        };
        if from.is_empty() {
            self.problem(
                where_,
                format!("notify channel `{name}` (email) needs `from`"),
            );
        } else {
            mailbox(self, &from, c.from.as_ref().and_then(at));
        }
        let to = match c.to.as_ref().map(|t| (&t.value, at(t))) {
            Some((OneOrMany::One(s), w)) => vec![(s.clone(), w)],
            Some((OneOrMany::Many(v), w)) => v.iter().map(|s| (s.clone(), w)).collect(),
            None => Vec::new(),
        };
        if to.is_empty() {
            self.problem(
                where_,
                format!("notify channel `{name}` (email) needs `to`"),
            );
        }
        for (a, w) in &to {
            mailbox(self, a, *w);
        }
        let ca = c.ca.as_ref().and_then(|p| self.email_ca(name, p));
        ChannelKind::Email(Email {
            host,
            port,
            tls,
            username,
            password,
            from,
            to: to.into_iter().map(|(a, _)| a).collect(),
            ca,
        })
    }

    /// An email channel's `ca`: a PEM certificate file, read now.
    fn email_ca(&mut self, name: &str, p: &Spanned<String>) -> Option<Vec<u8>> {
        let expanded = self.expand_str(&p.value, at(p));
        let path = self.rel(&expanded);
        match std::fs::read(&path) {
            Ok(pem) if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_ok() => {
                Some(pem)
            }
            Ok(_) => {
                self.problem(
                    at(p),
                    format!(
                        "notify channel `{name}`: `{}` holds no PEM certificate",
                        path.display()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(
                    at(p),
                    format!(
                        "notify channel `{name}`: cannot read `{}`: {e}",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    /// An optional text field, `${...}` expanded.
    fn text(&mut self, v: Option<&Spanned<String>>) -> Option<String> {
        v.map(|s| self.expand_str(&s.value, at(s)))
    }
}
