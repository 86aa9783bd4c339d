//! The portal's branding: its name, an optional logo and an optional main
//! colour, from the settings (`portal_name`, `portal_logo_file`,
//! `portal_brand_color`).
//!
//! The logo and a small theme stylesheet (the colour as the design system's
//! `--brand-*` properties) are served like the embedded assets: under a name
//! carrying a hash of their content, cached for a year. The theme is a file,
//! not an inline style, so the Content-Security-Policy stays `'self'`.

use std::ops::Deref;
use std::path::Path;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tollgate_core::Settings;

/// Largest logo accepted.
pub const MAX_LOGO_BYTES: u64 = 256 * 1024;

/// One branding file.
#[derive(Debug, Clone)]
pub struct BrandFile {
    /// Where pages link it (`/assets/brand/logo.<hash>.svg`).
    pub url: String,
    file: String,
    content_type: &'static str,
    bytes: Bytes,
}

impl BrandFile {
    fn new(stem: &str, ext: &str, content_type: &'static str, bytes: Bytes) -> Self {
        let digest = hex::encode(Sha256::digest(&bytes));
        let file = format!("{stem}.{}.{ext}", &digest[..12]);
        Self {
            url: format!("/assets/brand/{file}"),
            file,
            content_type,
            bytes,
        }
    }
}

/// The portal's name, logo and colour.
#[derive(Debug, Clone)]
pub struct Brand {
    /// The name (header, titles, mail).
    pub name: String,
    /// The logo, when configured.
    pub logo: Option<BrandFile>,
    /// The theme stylesheet, when a colour is configured.
    pub theme: Option<BrandFile>,
}

impl Deref for Brand {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

/// Why the branding cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BrandError {
    /// The logo file cannot be read.
    #[error("invalid setting portal_logo_file: cannot read {path}: {error}")]
    Unreadable {
        /// The configured path.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The logo is not an image we serve, or too large.
    #[error("invalid setting portal_logo_file: {path} {what}")]
    Unusable {
        /// The configured path.
        path: String,
        /// What is wrong.
        what: String,
    },
}

impl Brand {
    /// A brand with just a name (tests, defaults).
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            logo: None,
            theme: None,
        }
    }

    /// The branding the settings describe; reads the logo file.
    pub fn load(settings: &Settings) -> Result<Self, BrandError> {
        let mut brand = Self::named(&settings.portal_name);
        if let Some(path) = &settings.portal_logo_file {
            brand.logo = Some(logo(path)?);
        }
        if let Some(color) = &settings.portal_brand_color {
            brand.theme = Some(BrandFile::new(
                "theme",
                "css",
                "text/css; charset=utf-8",
                Bytes::from(theme_css(color)),
            ));
        }
        Ok(brand)
    }

    /// `GET /assets/brand/{file}`: the logo or the theme, by hashed name.
    pub fn serve(&self, file: &str) -> Option<Response> {
        let f = [&self.logo, &self.theme]
            .into_iter()
            .flatten()
            .find(|f| f.file == file)?;
        let mut resp = (StatusCode::OK, f.bytes.clone()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(f.content_type),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        Some(resp)
    }
}

fn logo(path: &Path) -> Result<BrandFile, BrandError> {
    let shown = path.display().to_string();
    let unusable = |what: &str| BrandError::Unusable {
        path: shown.clone(),
        what: what.to_owned(),
    };
    let size = std::fs::metadata(path)
        .map_err(|error| BrandError::Unreadable {
            path: shown.clone(),
            error,
        })?
        .len();
    if size > MAX_LOGO_BYTES {
        return Err(unusable(&format!(
            "is {size} bytes; a logo may have at most {MAX_LOGO_BYTES} (256 KiB)"
        )));
    }
    let bytes = std::fs::read(path).map_err(|error| BrandError::Unreadable {
        path: shown.clone(),
        error,
    })?;
    // By content, not by name: a file that is not what it says is refused.
    let (ext, content_type) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ("png", "image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        ("jpg", "image/jpeg")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        ("webp", "image/webp")
    } else if looks_like_svg(&bytes) {
        ("svg", "image/svg+xml")
    } else {
        return Err(unusable(
            "is not an SVG, PNG, JPEG or WebP image (judged by its content)",
        ));
    };
    Ok(BrandFile::new(
        "logo",
        ext,
        content_type,
        Bytes::from(bytes),
    ))
}

fn looks_like_svg(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    head.contains("<svg")
}

/// The design system's brand properties for one colour: the colour itself,
/// a darker shade for hover, and a pale tint for soft backgrounds.
fn theme_css(color: &str) -> String {
    let hex = color.trim_start_matches('#');
    let rgb: Vec<u8> = (0..3)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0))
        .collect();
    let mix = |toward: f64, amount: f64| -> String {
        let c: Vec<String> = rgb
            .iter()
            .map(|&v| {
                let v = f64::from(v);
                format!("{:02x}", (v + (toward - v) * amount).round() as u8)
            })
            .collect();
        format!("#{}", c.concat())
    };
    format!(
        "/* The portal's colour (portal_brand_color). */\n:root {{\n  --brand: {color};\n  --brand-strong: {};\n  --brand-soft: {};\n}}\n",
        mix(0.0, 0.3),
        mix(255.0, 0.9)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_theme_shades_the_colour() {
        let css = theme_css("#1d4ed8");
        assert!(css.contains("--brand: #1d4ed8;"), "{css}");
        assert!(css.contains("--brand-strong: #143797;"), "{css}");
        assert!(css.contains("--brand-soft: #e8edfb;"), "{css}");
    }

    #[test]
    fn logos_are_judged_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("logo.svg");
        std::fs::write(
            &svg,
            "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        )
        .unwrap();
        let f = logo(&svg).unwrap();
        assert!(
            f.url.starts_with("/assets/brand/logo.") && f.url.ends_with(".svg"),
            "{}",
            f.url
        );

        let fake = dir.path().join("logo.png");
        std::fs::write(&fake, "not an image").unwrap();
        assert!(
            logo(&fake)
                .unwrap_err()
                .to_string()
                .contains("not an SVG, PNG")
        );

        let big = dir.path().join("big.png");
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(300 * 1024, 0);
        std::fs::write(&big, bytes).unwrap();
        assert!(
            logo(&big)
                .unwrap_err()
                .to_string()
                .contains("at most 262144")
        );

        let missing = logo(&dir.path().join("nope.svg")).unwrap_err().to_string();
        assert!(
            missing.starts_with("invalid setting portal_logo_file: cannot read"),
            "{missing}"
        );
    }
}
