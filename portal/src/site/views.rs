//! Views shared by every page: the layout and the error and message pages.
//! Each page is an askama template over a typed struct that holds a
//! [`Layout`]; templates extend `base.html`.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::assets;
use super::brand::Brand;

/// What the layout around every page needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The whole `<title>`.
    pub title: String,
    /// The portal's name (header, footer).
    pub brand: String,
    /// Hashed URL of the stylesheet.
    pub stylesheet: &'static str,
    /// Hashed URL of the icon.
    pub favicon: &'static str,
    /// The configured logo's URL.
    pub logo: Option<String>,
    /// The configured colour's stylesheet URL (after the main one).
    pub theme: Option<String>,
    /// The signed-in person's address, for the header.
    pub signed_in: Option<String>,
    /// The CSRF token for the header's log-out form (signed in only).
    pub csrf: String,
}

impl Layout {
    /// A layout for a page called `page` (`None`: the start page).
    pub fn new(brand: &Brand, page: Option<&str>) -> Self {
        let name = &brand.name;
        Self {
            title: match page {
                Some(p) => format!("{p} · {name}"),
                None => format!("{name} developer portal"),
            },
            brand: name.clone(),
            stylesheet: assets::url("tollgate.css"),
            favicon: assets::url("favicon.svg"),
            logo: brand.logo.as_ref().map(|f| f.url.clone()),
            theme: brand.theme.as_ref().map(|f| f.url.clone()),
            signed_in: None,
            csrf: String::new(),
        }
    }
}

/// A link shown under a message.
#[derive(Debug, Clone)]
pub struct Link {
    /// Where it goes.
    pub href: String,
    /// What it says.
    pub label: String,
}

impl Link {
    /// A link.
    pub fn new(href: &str, label: &str) -> Self {
        Self {
            href: href.to_owned(),
            label: label.to_owned(),
        }
    }
}

/// A page with a heading, a few sentences and links: notices ("check your
/// inbox"), refusals and error pages.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    /// Layout.
    pub layout: Layout,
    /// `info`, `success`, `warning` or `error`: the alert's style.
    pub tone: &'static str,
    /// The `<h1>`.
    pub heading: String,
    /// Paragraphs.
    pub paragraphs: Vec<String>,
    /// Links under the text.
    pub links: Vec<Link>,
}

impl MessagePage {
    /// A message page titled by its heading.
    pub fn new(brand: &Brand, tone: &'static str, heading: &str, paragraphs: &[&str]) -> Self {
        Self {
            layout: Layout::new(brand, Some(heading)),
            tone,
            heading: heading.to_owned(),
            paragraphs: paragraphs.iter().map(|p| (*p).to_owned()).collect(),
            links: Vec::new(),
        }
    }

    /// Adds a link.
    pub fn link(mut self, href: &str, label: &str) -> Self {
        self.links.push(Link::new(href, label));
        self
    }
}

/// 303 See Other: after a form, the browser GETs the next page.
pub fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

/// Renders a view with a status; a template that fails to render is logged
/// and answered with a bare 500 (the error page may be what failed).
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}
