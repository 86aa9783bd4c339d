//! A cookie-keeping, non-redirecting browser for the portal's pages, and the
//! outbox where the portal's mail lands when no SMTP server is configured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

pub const SESSION_COOKIE: &str = "tollgate_session";

/// One answer: status, headers, body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect points.
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("the page has a form") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    /// The text of `<title>`.
    pub fn title(&self) -> &str {
        let start = self.body.find("<title>").expect("a title") + "<title>".len();
        let end = self.body[start..].find("</title>").unwrap();
        &self.body[start..start + end]
    }

    /// The session cookie's `Set-Cookie` line, if the answer set one.
    pub fn session_cookie(&self) -> Option<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
    }
}

/// A browser without JavaScript: keeps the session cookie, follows no redirects.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
    /// A header sent with every request (e.g. a proxy's `X-Forwarded-For`).
    pub extra_header: Option<(&'static str, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_owned(),
            cookie: None,
            extra_header: None,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", format!("{SESSION_COOKIE}={c}")),
            None => req,
        };
        let req = match &self.extra_header {
            Some((name, value)) => req.header(*name, value),
            None => req,
        };
        let resp = req.send().await.expect("portal reachable");
        let page = Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        };
        if let Some(set) = page.session_cookie() {
            let value = set
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches(&format!("{SESSION_COOKIE}="))
                .to_owned();
            let removed = set.to_ascii_lowercase().contains("max-age=0") || value.is_empty();
            self.cookie = if removed { None } else { Some(value) };
        }
        page
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(self.url(path));
        self.send(req).await
    }

    /// Posts a form as a browser would (fields URL-encoded).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self.http.post(self.url(path)).form(fields);
        self.send(req).await
    }

    /// Posts any body.
    pub async fn post_raw(&mut self, path: &str, content_type: &str, body: String) -> Page {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        self.send(req).await
    }

    /// Opens `page`, then sends its form to `action` with its CSRF token.
    pub async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let form = self.get(page).await;
        assert_eq!(form.status, 200, "GET {page}: {}", form.body);
        let token = form.csrf();
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    /// Signs up, opens the verification link from the outbox: a verified account.
    pub async fn sign_up_verified(&mut self, outbox: &Outbox, email: &str, password: &str) {
        let r = self
            .submit(
                "/signup",
                "/signup",
                &[("email", email), ("password", password)],
            )
            .await;
        assert_eq!(
            (r.status, r.location()),
            (303, "/signup/check-email"),
            "{}",
            r.body
        );
        let mail = outbox.wait_for(email, "Confirm your e-mail address").await;
        let link = mail.link("/verify-email/");
        let r = self.get(&link).await;
        // Opened in the browser that signed up, the link also logs it in:
        // log out, so callers start from a verified account, signed out.
        assert_eq!(
            (r.status, r.location()),
            (303, "/apps?notice=welcome"),
            "{}",
            r.body
        );
        let r = self.submit("/account", "/logout", &[]).await;
        assert_eq!(r.status, 303, "{}", r.body);
    }

    /// Logs in; asserts it worked.
    pub async fn log_in(&mut self, email: &str, password: &str) {
        let r = self
            .submit(
                "/login",
                "/login",
                &[("email", email), ("password", password)],
            )
            .await;
        assert_eq!((r.status, r.location()), (303, "/account"), "{}", r.body);
    }
}

/// One message from the outbox.
#[derive(Debug, Clone)]
pub struct Mail {
    pub path: PathBuf,
    pub text: String,
}

impl Mail {
    /// The first link whose path starts with `prefix`.
    pub fn link(&self, prefix: &str) -> String {
        link_in(&self.text, prefix)
    }
}

/// The first link in a message whose path starts with `prefix`; quoted-printable
/// soft line breaks (`=` at a line end) are joined first.
pub fn link_in(message: &str, prefix: &str) -> String {
    let text = message.replace("=\r\n", "");
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    let start = text[..at].rfind("http").unwrap();
    let end = at + text[at..].find(char::is_whitespace).unwrap();
    text[start..end].to_owned()
}

/// The portal's outbox folder.
pub struct Outbox {
    pub dir: PathBuf,
}

impl Outbox {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("outbox"),
        }
    }

    /// Every message so far.
    pub fn all(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut mails: Vec<Mail> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .map(|path| {
                let raw = std::fs::read_to_string(&path).unwrap();
                // Undo quoted-printable soft line breaks, should a line be long.
                let text = raw.replace("=\r\n", "");
                Mail { path, text }
            })
            .collect();
        mails.sort_by(|a, b| a.path.cmp(&b.path));
        mails
    }

    /// Messages to `to` whose subject contains `subject`.
    pub fn to(&self, to: &str, subject: &str) -> Vec<Mail> {
        self.all()
            .into_iter()
            .filter(|m| {
                m.text.contains(&format!("\r\nTo: {to}\r\n"))
                    && m.text
                        .lines()
                        .any(|l| l.starts_with("Subject: ") && l.contains(subject))
            })
            .collect()
    }

    /// Waits (5 s at most) for the `n`-th message to `to` with `subject`.
    pub async fn wait_for_nth(&self, to: &str, subject: &str, n: usize) -> Mail {
        let found = tollgate_testkit::eventually(Duration::from_secs(5), || async {
            let mails = self.to(to, subject);
            (mails.len() >= n).then(|| mails[n - 1].clone())
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no message #{n} to {to} about {subject:?}; outbox: {:#?}",
                self.all().iter().map(|m| &m.path).collect::<Vec<_>>()
            )
        })
    }

    /// Waits for the first message to `to` with `subject`.
    pub async fn wait_for(&self, to: &str, subject: &str) -> Mail {
        self.wait_for_nth(to, subject, 1).await
    }
}

/// Runs SQL against the app's control-plane database (to age a token).
pub async fn execute_sql(database_url: &str, sql: &'static str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}
