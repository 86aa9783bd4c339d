//! Sample code for one API call in eight languages.
//!
//! Every value that reaches a sample (URL, header names and values, body)
//! may come from an API's OpenAPI document, which the portal does not trust:
//! each language gets its own quoting, so a hostile value stays a string in
//! the sample and never becomes code. Header names and values lose control
//! characters (they could not be sent anyway). Pages escape the samples
//! again as HTML.

/// The call a sample makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The whole URL, query included, already percent-encoded.
    pub url: String,
    /// Request headers, in order (not the content type).
    pub headers: Vec<(String, String)>,
    /// A body and its content type.
    pub body: Option<(String, String)>,
}

/// A language the portal writes samples in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// curl in a POSIX shell.
    Curl,
    /// Python with `requests`.
    Python,
    /// JavaScript with `fetch`.
    JavaScript,
    /// Go with `net/http`.
    Go,
    /// Java with `java.net.http`.
    Java,
    /// C# with `HttpClient`.
    CSharp,
    /// PHP with the curl extension.
    Php,
    /// Rust with `reqwest`.
    Rust,
}

impl Language {
    /// Every language, in the order pages show them.
    pub const ALL: [Language; 8] = [
        Language::Curl,
        Language::Python,
        Language::JavaScript,
        Language::Go,
        Language::Java,
        Language::CSharp,
        Language::Php,
        Language::Rust,
    ];

    /// A short id (HTML ids, CSS classes).
    pub fn id(self) -> &'static str {
        match self {
            Self::Curl => "curl",
            Self::Python => "python",
            Self::JavaScript => "javascript",
            Self::Go => "go",
            Self::Java => "java",
            Self::CSharp => "csharp",
            Self::Php => "php",
            Self::Rust => "rust",
        }
    }

    /// The name shown.
    pub fn label(self) -> &'static str {
        match self {
            Self::Curl => "curl",
            Self::Python => "Python (requests)",
            Self::JavaScript => "JavaScript (fetch)",
            Self::Go => "Go",
            Self::Java => "Java",
            Self::CSharp => "C# (HttpClient)",
            Self::Php => "PHP",
            Self::Rust => "Rust (reqwest)",
        }
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Its language.
    pub language: Language,
    /// The code.
    pub code: String,
}

/// Samples of `req` in every language.
pub fn all(req: &SampleRequest) -> Vec<Sample> {
    let req = clean(req);
    Language::ALL
        .iter()
        .map(|&language| Sample {
            language,
            code: generate(language, &req),
        })
        .collect()
}

/// The sample of `req` in `language`.
pub fn generate(language: Language, req: &SampleRequest) -> String {
    let req = clean(req);
    match language {
        Language::Curl => curl(&req),
        Language::Python => python(&req),
        Language::JavaScript => javascript(&req),
        Language::Go => go(&req),
        Language::Java => java(&req),
        Language::CSharp => csharp(&req),
        Language::Php => php(&req),
        Language::Rust => rust(&req),
    }
}

/// The method as a token (letters only, upper case), header names and values
/// without control characters.
fn clean(req: &SampleRequest) -> SampleRequest {
    let no_controls = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut method: String = req
        .method
        .chars()
        .filter(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    if method.is_empty() {
        method = "GET".into();
    }
    SampleRequest {
        method,
        url: no_controls(&req.url),
        headers: req
            .headers
            .iter()
            .map(|(n, v)| (no_controls(n).replace(':', ""), no_controls(v)))
            .collect(),
        body: req
            .body
            .as_ref()
            .map(|(ct, b)| (no_controls(ct), b.clone())),
    }
}

/// A POSIX shell word: single quotes, with `'` written as `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A double-quoted literal with JSON's escapes, which Python, JavaScript, Go
/// and C# all read the same way.
pub fn c_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Java string literal. Java turns `\uXXXX` into characters before it reads
/// a literal, so control characters get octal escapes instead; a backslash is
/// doubled, which keeps a `\u` in the value from being read as an escape.
pub fn java_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\{:03o}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A PHP single-quoted literal: only `\` and `'` are special.
pub fn php_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
}

/// A Rust string literal.
pub fn rust_quote(s: &str) -> String {
    format!("{s:?}")
}

fn curl(r: &SampleRequest) -> String {
    let mut lines = Vec::new();
    let first = if r.method == "GET" && r.body.is_none() {
        format!("curl {}", sh_quote(&r.url))
    } else {
        format!("curl -X {} {}", r.method, sh_quote(&r.url))
    };
    lines.push(first);
    for (n, v) in &r.headers {
        lines.push(format!("  -H {}", sh_quote(&format!("{n}: {v}"))));
    }
    if let Some((ct, body)) = &r.body {
        lines.push(format!("  -H {}", sh_quote(&format!("content-type: {ct}"))));
        lines.push(format!("  --data-raw {}", sh_quote(body)));
    }
    lines.join(" \\\n") + "\n"
}

fn python(r: &SampleRequest) -> String {
    let mut s = String::from("import requests\n\n");
    s.push_str("headers = {\n");
    for (n, v) in &r.headers {
        s.push_str(&format!("    {}: {},\n", c_quote(n), c_quote(v)));
    }
    if let Some((ct, _)) = &r.body {
        s.push_str(&format!("    \"content-type\": {},\n", c_quote(ct)));
    }
    s.push_str("}\n");
    if let Some((_, body)) = &r.body {
        s.push_str(&format!("body = {}\n", c_quote(body)));
    }
    s.push_str(&format!(
        "\nresponse = requests.request({}, {}, headers=headers{})\n",
        c_quote(&r.method),
        c_quote(&r.url),
        if r.body.is_some() {
            ", data=body.encode(\"utf-8\")"
        } else {
            ""
        }
    ));
    s.push_str("print(response.status_code, response.text)\n");
    s
}

fn javascript(r: &SampleRequest) -> String {
    let mut s = format!("const response = await fetch({}, {{\n", c_quote(&r.url));
    s.push_str(&format!("  method: {},\n", c_quote(&r.method)));
    s.push_str("  headers: {\n");
    for (n, v) in &r.headers {
        s.push_str(&format!("    {}: {},\n", c_quote(n), c_quote(v)));
    }
    if let Some((ct, _)) = &r.body {
        s.push_str(&format!("    \"content-type\": {},\n", c_quote(ct)));
    }
    s.push_str("  },\n");
    if let Some((_, body)) = &r.body {
        s.push_str(&format!("  body: {},\n", c_quote(body)));
    }
    s.push_str("});\nconsole.log(response.status, await response.text());\n");
    s
}

fn go(r: &SampleRequest) -> String {
    let mut imports = vec!["\"fmt\"", "\"io\"", "\"net/http\""];
    let body = match &r.body {
        Some((_, b)) => {
            imports.push("\"strings\"");
            format!("strings.NewReader({})", c_quote(b))
        }
        None => "nil".into(),
    };
    let mut s = String::from("package main\n\nimport (\n");
    for i in imports {
        s.push_str(&format!("\t{i}\n"));
    }
    s.push_str(")\n\nfunc main() {\n");
    s.push_str(&format!(
        "\treq, err := http.NewRequest({}, {}, {body})\n",
        c_quote(&r.method),
        c_quote(&r.url)
    ));
    s.push_str("\tif err != nil {\n\t\tpanic(err)\n\t}\n");
    for (n, v) in &r.headers {
        s.push_str(&format!(
            "\treq.Header.Set({}, {})\n",
            c_quote(n),
            c_quote(v)
        ));
    }
    if let Some((ct, _)) = &r.body {
        s.push_str(&format!(
            "\treq.Header.Set(\"content-type\", {})\n",
            c_quote(ct)
        ));
    }
    s.push_str(
        "\tresp, err := http.DefaultClient.Do(req)\n\tif err != nil {\n\t\tpanic(err)\n\t}\n\
         \tdefer resp.Body.Close()\n\tbody, err := io.ReadAll(resp.Body)\n\tif err != nil {\n\t\tpanic(err)\n\t}\n\
         \tfmt.Println(resp.Status, string(body))\n}\n",
    );
    s
}

fn java(r: &SampleRequest) -> String {
    let mut s = String::from(
        "import java.net.URI;\nimport java.net.http.HttpClient;\nimport java.net.http.HttpRequest;\n\
         import java.net.http.HttpResponse;\n\npublic class Example {\n\
         \x20   public static void main(String[] args) throws Exception {\n",
    );
    s.push_str(&format!(
        "        HttpRequest request = HttpRequest.newBuilder(URI.create({}))\n",
        java_quote(&r.url)
    ));
    for (n, v) in &r.headers {
        s.push_str(&format!(
            "            .header({}, {})\n",
            java_quote(n),
            java_quote(v)
        ));
    }
    let publisher = match &r.body {
        Some((ct, b)) => {
            s.push_str(&format!(
                "            .header(\"content-type\", {})\n",
                java_quote(ct)
            ));
            format!("HttpRequest.BodyPublishers.ofString({})", java_quote(b))
        }
        None => "HttpRequest.BodyPublishers.noBody()".into(),
    };
    s.push_str(&format!(
        "            .method({}, {publisher})\n            .build();\n",
        java_quote(&r.method)
    ));
    s.push_str(
        "        HttpResponse<String> response = HttpClient.newHttpClient()\n\
         \x20           .send(request, HttpResponse.BodyHandlers.ofString());\n\
         \x20       System.out.println(response.statusCode() + \" \" + response.body());\n    }\n}\n",
    );
    s
}

fn csharp(r: &SampleRequest) -> String {
    let mut s = String::from("using System.Net.Http;\nusing System.Text;\n\n");
    s.push_str("using var client = new HttpClient();\n");
    s.push_str(&format!(
        "using var request = new HttpRequestMessage(new HttpMethod({}), {});\n",
        c_quote(&r.method),
        c_quote(&r.url)
    ));
    for (n, v) in &r.headers {
        s.push_str(&format!(
            "request.Headers.TryAddWithoutValidation({}, {});\n",
            c_quote(n),
            c_quote(v)
        ));
    }
    if let Some((ct, b)) = &r.body {
        s.push_str(&format!(
            "request.Content = new StringContent({}, Encoding.UTF8, {});\n",
            c_quote(b),
            c_quote(ct)
        ));
    }
    s.push_str(
        "using var response = await client.SendAsync(request);\n\
         Console.WriteLine($\"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}\");\n",
    );
    s
}

fn php(r: &SampleRequest) -> String {
    let mut s = format!("<?php\n$ch = curl_init({});\n", php_quote(&r.url));
    s.push_str(&format!(
        "curl_setopt($ch, CURLOPT_CUSTOMREQUEST, {});\n",
        php_quote(&r.method)
    ));
    s.push_str("curl_setopt($ch, CURLOPT_HTTPHEADER, [\n");
    for (n, v) in &r.headers {
        s.push_str(&format!("    {},\n", php_quote(&format!("{n}: {v}"))));
    }
    if let Some((ct, _)) = &r.body {
        s.push_str(&format!(
            "    {},\n",
            php_quote(&format!("content-type: {ct}"))
        ));
    }
    s.push_str("]);\n");
    if let Some((_, b)) = &r.body {
        s.push_str(&format!(
            "curl_setopt($ch, CURLOPT_POSTFIELDS, {});\n",
            php_quote(b)
        ));
    }
    s.push_str(
        "curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);\n$body = curl_exec($ch);\n\
         echo curl_getinfo($ch, CURLINFO_HTTP_CODE), ' ', $body, PHP_EOL;\n",
    );
    s
}

fn rust(r: &SampleRequest) -> String {
    let method = match r.method.as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "CONNECT" | "PATCH"
        | "TRACE") => format!("reqwest::Method::{m}"),
        other => format!("reqwest::Method::from_bytes(b{})?", rust_quote(other)),
    };
    let mut s = String::from(
        "// Cargo.toml: reqwest = \"0.12\", tokio = { version = \"1\", features = [\"full\"] }\n\
         #[tokio::main]\nasync fn main() -> Result<(), Box<dyn std::error::Error>> {\n\
         \x20   let response = reqwest::Client::new()\n",
    );
    s.push_str(&format!(
        "        .request({method}, {})\n",
        rust_quote(&r.url)
    ));
    for (n, v) in &r.headers {
        s.push_str(&format!(
            "        .header({}, {})\n",
            rust_quote(n),
            rust_quote(v)
        ));
    }
    if let Some((ct, b)) = &r.body {
        s.push_str(&format!(
            "        .header(\"content-type\", {})\n",
            rust_quote(ct)
        ));
        s.push_str(&format!("        .body({})\n", rust_quote(b)));
    }
    s.push_str(
        "        .send()\n        .await?;\n\
         \x20   println!(\"{} {}\", response.status(), response.text().await?);\n    Ok(())\n}\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> SampleRequest {
        SampleRequest {
            method: "GET".into(),
            url: "http://127.0.0.1:8000/weather/today?city=Paris".into(),
            headers: vec![("x-api-key".into(), "YOUR_API_KEY".into())],
            body: None,
        }
    }

    fn post(body: &str) -> SampleRequest {
        SampleRequest {
            method: "post".into(),
            url: "http://127.0.0.1:8000/notes".into(),
            headers: vec![("x-api-key".into(), "tg_live_abc".into())],
            body: Some(("application/json".into(), body.into())),
        }
    }

    #[test]
    fn every_language_has_a_sample_with_url_and_key() {
        let samples = all(&get());
        assert_eq!(samples.len(), 8);
        for s in &samples {
            assert!(
                s.code
                    .contains("http://127.0.0.1:8000/weather/today?city=Paris"),
                "{:?}",
                s.language
            );
            assert!(s.code.contains("YOUR_API_KEY"), "{:?}", s.language);
            assert!(s.code.contains("x-api-key"), "{:?}", s.language);
        }
    }

    #[test]
    fn curl() {
        assert_eq!(
            generate(Language::Curl, &get()),
            "curl 'http://127.0.0.1:8000/weather/today?city=Paris' \\\n  -H 'x-api-key: YOUR_API_KEY'\n"
        );
        assert_eq!(
            generate(Language::Curl, &post(r#"{"text":"it's"}"#)),
            "curl -X POST 'http://127.0.0.1:8000/notes' \\\n  -H 'x-api-key: tg_live_abc' \\\n  \
             -H 'content-type: application/json' \\\n  --data-raw '{\"text\":\"it'\\''s\"}'\n"
        );
    }

    #[test]
    fn python() {
        let code = generate(Language::Python, &post(r#"{"a":"b"}"#));
        assert!(code.starts_with("import requests\n"));
        assert!(code.contains("    \"x-api-key\": \"tg_live_abc\",\n"));
        assert!(code.contains("body = \"{\\\"a\\\":\\\"b\\\"}\"\n"));
        assert!(code.contains(
            "requests.request(\"POST\", \"http://127.0.0.1:8000/notes\", headers=headers, data=body.encode(\"utf-8\"))"
        ));
        let code = generate(Language::Python, &get());
        assert!(code.contains("requests.request(\"GET\", \"http://127.0.0.1:8000/weather/today?city=Paris\", headers=headers)\n"));
    }

    #[test]
    fn javascript() {
        let code = generate(Language::JavaScript, &post("{}"));
        assert!(code.starts_with(
            "const response = await fetch(\"http://127.0.0.1:8000/notes\", {\n  method: \"POST\",\n"
        ));
        assert!(code.contains("  body: \"{}\",\n"));
        assert!(code.contains("\"content-type\": \"application/json\""));
    }

    #[test]
    fn go() {
        let code = generate(Language::Go, &post("{}"));
        assert!(code.contains(
            "http.NewRequest(\"POST\", \"http://127.0.0.1:8000/notes\", strings.NewReader(\"{}\"))"
        ));
        assert!(code.contains("\t\"strings\"\n"));
        let code = generate(Language::Go, &get());
        assert!(code.contains(", nil)\n"));
        assert!(
            !code.contains("strings"),
            "an unused import does not compile"
        );
        assert!(code.contains("req.Header.Set(\"x-api-key\", \"YOUR_API_KEY\")"));
    }

    #[test]
    fn java() {
        let code = generate(Language::Java, &post("{}"));
        assert!(
            code.contains("HttpRequest.newBuilder(URI.create(\"http://127.0.0.1:8000/notes\"))")
        );
        assert!(code.contains(".method(\"POST\", HttpRequest.BodyPublishers.ofString(\"{}\"))"));
        let code = generate(Language::Java, &get());
        assert!(code.contains(".method(\"GET\", HttpRequest.BodyPublishers.noBody())"));
    }

    #[test]
    fn csharp() {
        let code = generate(Language::CSharp, &post("{}"));
        assert!(code.contains(
            "new HttpRequestMessage(new HttpMethod(\"POST\"), \"http://127.0.0.1:8000/notes\")"
        ));
        assert!(
            code.contains(
                "request.Headers.TryAddWithoutValidation(\"x-api-key\", \"tg_live_abc\");"
            )
        );
        assert!(code.contains("new StringContent(\"{}\", Encoding.UTF8, \"application/json\")"));
    }

    #[test]
    fn php() {
        let code = generate(Language::Php, &post("{}"));
        assert!(code.starts_with("<?php\n$ch = curl_init('http://127.0.0.1:8000/notes');\n"));
        assert!(code.contains("    'x-api-key: tg_live_abc',\n"));
        assert!(code.contains("curl_setopt($ch, CURLOPT_POSTFIELDS, '{}');"));
    }

    #[test]
    fn rust() {
        let code = generate(Language::Rust, &post("{}"));
        assert!(code.contains(".request(reqwest::Method::POST, \"http://127.0.0.1:8000/notes\")"));
        assert!(code.contains(".body(\"{}\")"));
        let odd = SampleRequest {
            method: "PURGE".into(),
            ..get()
        };
        assert!(
            generate(Language::Rust, &odd).contains("reqwest::Method::from_bytes(b\"PURGE\")?")
        );
    }

    #[test]
    fn quoting_keeps_hostile_values_inside_their_strings() {
        let evil = "a'b\"c\\d$e`f\ng\u{0}h\u{2028}i";
        assert_eq!(sh_quote(evil), "'a'\\''b\"c\\d$e`f\ng\u{0}h\u{2028}i'");
        assert_eq!(c_quote(evil), "\"a'b\\\"c\\\\d$e`f\\ng\\u0000h\u{2028}i\"");
        assert_eq!(java_quote(evil), "\"a'b\\\"c\\\\d$e`f\\ng\\000h\u{2028}i\"");
        // A `\u` in the value must not become a Java unicode escape.
        assert_eq!(java_quote("\\u0022"), "\"\\\\u0022\"");
        assert_eq!(php_quote(evil), "'a\\'b\"c\\\\d$e`f\ng\u{0}h\u{2028}i'");
        assert_eq!(rust_quote(evil), "\"a'b\\\"c\\\\d$e`f\\ng\\0h\\u{2028}i\"");
    }

    #[test]
    fn hostile_header_and_method_cannot_break_out() {
        let req = SampleRequest {
            method: "GET\"); rm -rf /; (\"".into(),
            url: "http://x/\n'; rm -rf ~; '".into(),
            headers: vec![("x-evil\r\nInjected: 1".into(), "v\r\nx: y".into())],
            body: None,
        };
        let cleaned = clean(&req);
        assert_eq!(cleaned.method, "GETRMRF");
        assert_eq!(
            cleaned.headers[0],
            ("x-evilInjected 1".into(), "vx: y".into())
        );
        let curl = generate(Language::Curl, &req);
        assert_eq!(
            curl,
            "curl -X GETRMRF 'http://x/'\\''; rm -rf ~; '\\''' \\\n  -H 'x-evilInjected 1: vx: y'\n"
        );
        for s in all(&req) {
            assert!(!s.code.contains('\r'), "{:?}", s.language);
        }
    }
}
