//! Static files from `web-assets/`, embedded in the binary.
//!
//! Each file is served under a name carrying a hash of its content
//! (`/assets/tollgate.3f9c1a2b7d4e.css`) with a one-year immutable cache
//! lifetime: a changed file gets a new URL, so browsers never keep a stale
//! copy and never ask twice for a current one. The plain name
//! (`/assets/tollgate.css`) also answers, for links from outside the portal,
//! but must be revalidated. Templates get URLs from [`url`].

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// The plain file name, as templates ask for it.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file the portal serves; add a line to add a file.
static ASSETS: &[Asset] = &[
    Asset {
        name: "tollgate.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../web-assets/css/tollgate.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../../web-assets/img/favicon.svg"),
    },
    Asset {
        name: "copy.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web-assets/js/copy.js"),
    },
];

/// Hashed URL by plain name, and asset by either served name.
struct Index {
    urls: HashMap<&'static str, String>,
    hashed: HashMap<String, &'static Asset>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut urls = HashMap::new();
    let mut hashed = HashMap::new();
    for asset in ASSETS {
        let digest = hex::encode(Sha256::digest(asset.bytes));
        let (stem, ext) = asset.name.rsplit_once('.').unwrap_or((asset.name, ""));
        let file = format!("{stem}.{}.{ext}", &digest[..12]);
        urls.insert(asset.name, format!("/assets/{file}"));
        hashed.insert(file, asset);
    }
    Index { urls, hashed }
});

/// The content-hashed URL of an embedded file, e.g. `url("tollgate.css")`.
///
/// # Panics
/// When `name` is not in the asset list: a typo in a template's view, caught
/// by the first test that renders it.
pub fn url(name: &str) -> &'static str {
    INDEX
        .urls
        .get(name)
        .unwrap_or_else(|| panic!("no embedded asset named {name}"))
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "public, no-cache";

/// `GET /assets/{file}`: the file, or `None` for the 404 page.
pub fn serve(Path(file): Path<String>) -> Option<Response> {
    let (asset, cache) = match INDEX.hashed.get(&file) {
        Some(a) => (*a, IMMUTABLE),
        None => (ASSETS.iter().find(|a| a.name == file)?, REVALIDATE),
    };
    let mut resp = (StatusCode::OK, asset.bytes).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_a_content_hash() {
        let u = url("tollgate.css");
        assert!(
            u.starts_with("/assets/tollgate.") && u.ends_with(".css"),
            "{u}"
        );
        assert_eq!(u.len(), "/assets/tollgate..css".len() + 12);
        assert_ne!(url("favicon.svg"), url("tollgate.css"));
    }
}
