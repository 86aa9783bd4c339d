//! An API's OpenAPI 3 document read into what its page shows: operations
//! grouped by tag, their parameters, request and response schemas (with
//! `$ref`s resolved) and examples, and the call each sample makes.
//!
//! The document is parsed with the `openapiv3` crate. Everything in it is
//! untrusted text: views carry it as plain strings and the templates escape
//! it. References are followed only inside the document
//! (`#/components/...`), at most [`MAX_DEPTH`] levels deep, and a schema that
//! refers to itself is shown once and then named, never expanded again.

use std::collections::HashSet;

use openapiv3::{
    MediaType, OpenAPI, Operation, Parameter, ParameterSchemaOrContent, ReferenceOr, RequestBody,
    Response, Schema, SchemaKind, Type,
};
use serde_json::{Map, Value};

/// How deep schemas are shown and examples built.
pub const MAX_DEPTH: usize = 8;

/// An API's documentation.
#[derive(Debug, Clone)]
pub struct ApiDocs {
    /// `info.title`.
    pub title: String,
    /// `info.version`.
    pub version: String,
    /// `info.description`.
    pub description: String,
    /// Operations by tag, in the document's tag order.
    pub groups: Vec<OperationGroup>,
}

/// The operations under one tag.
#[derive(Debug, Clone)]
pub struct OperationGroup {
    /// The tag ("Endpoints" for untagged operations).
    pub name: String,
    /// The tag's description.
    pub description: String,
    /// An HTML id.
    pub anchor: String,
    /// Its operations, in document order.
    pub operations: Vec<OperationDoc>,
}

/// One operation.
#[derive(Debug, Clone)]
pub struct OperationDoc {
    /// An HTML id, unique in the page.
    pub anchor: String,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path as documented (`/users/{id}`).
    pub path: String,
    /// One line.
    pub summary: String,
    /// More text.
    pub description: String,
    /// Marked deprecated.
    pub deprecated: bool,
    /// Path, query, header and cookie parameters.
    pub parameters: Vec<ParameterDoc>,
    /// The request body, if any.
    pub request_body: Option<BodyDoc>,
    /// Responses by status.
    pub responses: Vec<ResponseDoc>,
    /// The call samples and the try-it form make.
    pub call: Call,
}

/// One parameter.
#[derive(Debug, Clone)]
pub struct ParameterDoc {
    /// Its name.
    pub name: String,
    /// `path`, `query`, `header` or `cookie`.
    pub location: &'static str,
    /// Must be sent.
    pub required: bool,
    /// `string`, `integer (int64)`, `array of string`, …
    pub type_label: String,
    /// What it means.
    pub description: String,
    /// An example value, as text.
    pub example: String,
}

/// A request body.
#[derive(Debug, Clone)]
pub struct BodyDoc {
    /// Its media type.
    pub content_type: String,
    /// Must be sent.
    pub required: bool,
    /// What it is.
    pub description: String,
    /// Its fields.
    pub fields: Vec<FieldRow>,
    /// An example, pretty-printed JSON (or empty).
    pub example: String,
}

/// A response.
#[derive(Debug, Clone)]
pub struct ResponseDoc {
    /// `200`, `4XX`, `default`.
    pub status: String,
    /// What it means.
    pub description: String,
    /// Its media type (empty without a body).
    pub content_type: String,
    /// The fields of its body.
    pub fields: Vec<FieldRow>,
    /// An example body, pretty-printed JSON (or empty).
    pub example: String,
}

impl ResponseDoc {
    /// `2`, `4`, … for the status's colour; `d` for `default`.
    pub fn status_class(&self) -> &str {
        self.status.get(..1).unwrap_or("d")
    }
}

/// One field of a schema, flattened: nested fields follow their parent with
/// a greater depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRow {
    /// Nesting depth, 0 for top-level fields.
    pub depth: usize,
    /// The field's name (`[]` for array items).
    pub name: String,
    /// Its type.
    pub type_label: String,
    /// Must be present.
    pub required: bool,
    /// What it means.
    pub description: String,
}

/// The call an operation's samples make, with example values filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    /// The path with path parameters filled in (percent-encoded).
    pub path: String,
    /// Required query parameters with examples, encoded as a query string.
    pub query: String,
    /// Required header parameters with examples.
    pub headers: Vec<(String, String)>,
    /// The body's media type and an example body.
    pub body: Option<(String, String)>,
}

/// The document could not be read as OpenAPI 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocsError(pub String);

/// Reads `doc` into docs. An OpenAPI 3.1 document is first brought to the
/// 3.0 shape the parser knows (see [`downlevel_31`]).
pub fn read(doc: &Value) -> Result<ApiDocs, DocsError> {
    let is_31 = doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1"));
    let doc = if is_31 {
        downlevel_31(doc)
    } else {
        doc.clone()
    };
    let api: OpenAPI = serde_json::from_value(doc).map_err(|e| DocsError(e.to_string()))?;
    Ok(Reader { api: &api }.docs())
}

/// An OpenAPI 3.1 document in 3.0 terms, for what the page shows: a type list
/// with `null` becomes `nullable` (another type list: any type), numeric
/// `exclusiveMinimum`/`exclusiveMaximum` become a bound plus the 3.0 flag,
/// a schema's `examples` list its first `example`, `const` a one-value
/// `enum`, and a missing `paths` an empty one. Only schemas carry these
/// shapes (3.0's `examples` on parameters and media types are maps, left as
/// they are), so the whole tree is walked.
fn downlevel_31(doc: &Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => {
                if let Some(Value::Array(types)) = map.get("type").cloned() {
                    let mut named: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
                    let nullable = map["type"]
                        .as_array()
                        .is_some_and(|t| t.len() > named.len());
                    map.remove("type");
                    if named.len() == 1 {
                        map.insert("type".to_owned(), named.remove(0));
                    }
                    if nullable {
                        map.insert("nullable".to_owned(), Value::Bool(true));
                    }
                }
                for (exclusive, bound) in [
                    ("exclusiveMinimum", "minimum"),
                    ("exclusiveMaximum", "maximum"),
                ] {
                    if let Some(n @ Value::Number(_)) = map.get(exclusive).cloned() {
                        map.insert(bound.to_owned(), n);
                        map.insert(exclusive.to_owned(), Value::Bool(true));
                    }
                }
                if let Some(Value::Array(examples)) = map.get("examples").cloned() {
                    map.remove("examples");
                    if let Some(first) = examples.into_iter().next() {
                        map.entry("example").or_insert(first);
                    }
                }
                if let Some(c) = map.remove("const") {
                    map.insert("enum".to_owned(), Value::Array(vec![c]));
                }
                map.values_mut().for_each(walk);
            }
            _ => {}
        }
    }
    let mut doc = doc.clone();
    walk(&mut doc);
    if let Value::Object(map) = &mut doc {
        map.insert("openapi".to_owned(), Value::String("3.0.3".to_owned()));
        map.entry("paths")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    doc
}

/// The tags an OpenAPI document uses (declared and on operations), without
/// parsing it whole: for the catalog's search.
pub fn tags(doc: &Value) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut add = |t: &str| {
        if !t.is_empty() && !tags.iter().any(|x| x.eq_ignore_ascii_case(t)) {
            tags.push(t.to_owned());
        }
    };
    for t in doc["tags"].as_array().into_iter().flatten() {
        if let Some(name) = t["name"].as_str() {
            add(name);
        }
    }
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            for t in op["tags"].as_array().into_iter().flatten() {
                if let Some(name) = t.as_str() {
                    add(name);
                }
            }
        }
    }
    tags
}

/// `info.description` (or `info.title`), for the catalog.
pub fn summary(doc: &Value) -> String {
    doc["info"]["description"]
        .as_str()
        .or_else(|| doc["info"]["title"].as_str())
        .unwrap_or_default()
        .to_owned()
}

struct Reader<'a> {
    api: &'a OpenAPI,
}

/// Follows references to components, at most `MAX_DEPTH` hops.
fn follow<'a, T>(
    mut r: &'a ReferenceOr<T>,
    prefix: &str,
    lookup: impl Fn(&str) -> Option<&'a ReferenceOr<T>>,
) -> Option<&'a T> {
    for _ in 0..MAX_DEPTH {
        match r {
            ReferenceOr::Item(t) => return Some(t),
            ReferenceOr::Reference { reference } => {
                r = lookup(reference.strip_prefix(prefix)?)?;
            }
        }
    }
    None
}

/// The name at the end of a `$ref`.
fn ref_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn anchor_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl<'a> Reader<'a> {
    fn docs(&self) -> ApiDocs {
        let mut groups: Vec<OperationGroup> = self
            .api
            .tags
            .iter()
            .map(|t| OperationGroup {
                name: t.name.clone(),
                description: t.description.clone().unwrap_or_default(),
                anchor: String::new(),
                operations: Vec::new(),
            })
            .collect();
        let mut used_anchors = HashSet::new();
        for (path, item) in self.api.paths.iter() {
            let Some(item) = follow(item, "", |_| None) else {
                continue;
            };
            for (method, op) in item.iter() {
                let doc = self.operation(path, method, op, &item.parameters, &mut used_anchors);
                let tag = op.tags.first().map_or("Endpoints", String::as_str);
                match groups.iter_mut().find(|g| g.name == tag) {
                    Some(g) => g.operations.push(doc),
                    None => groups.push(OperationGroup {
                        name: tag.to_owned(),
                        description: String::new(),
                        anchor: String::new(),
                        operations: vec![doc],
                    }),
                }
            }
        }
        groups.retain(|g| !g.operations.is_empty());
        for (i, g) in groups.iter_mut().enumerate() {
            g.anchor = format!("tag-{i}-{}", anchor_text(&g.name));
        }
        ApiDocs {
            title: self.api.info.title.clone(),
            version: self.api.info.version.clone(),
            description: self.api.info.description.clone().unwrap_or_default(),
            groups,
        }
    }

    fn parameter(&self, p: &'a ReferenceOr<Parameter>) -> Option<&'a Parameter> {
        follow(p, "#/components/parameters/", |name| {
            self.api.components.as_ref()?.parameters.get(name)
        })
    }

    fn schema(&self, s: &'a ReferenceOr<Schema>) -> Option<&'a Schema> {
        follow(s, "#/components/schemas/", |name| {
            self.api.components.as_ref()?.schemas.get(name)
        })
    }

    fn boxed_schema(&self, s: &'a ReferenceOr<Box<Schema>>) -> Option<&'a Schema> {
        match s {
            ReferenceOr::Item(b) => Some(b),
            ReferenceOr::Reference { reference } => self.schema_ref(reference),
        }
    }

    fn schema_ref(&self, reference: &str) -> Option<&'a Schema> {
        let name = reference.strip_prefix("#/components/schemas/")?;
        let r = self.api.components.as_ref()?.schemas.get(name)?;
        self.schema(r)
    }

    fn operation(
        &self,
        path: &str,
        method: &str,
        op: &'a Operation,
        shared: &'a [ReferenceOr<Parameter>],
        used: &mut HashSet<String>,
    ) -> OperationDoc {
        let method = method.to_ascii_uppercase();
        let base = match &op.operation_id {
            Some(id) if !anchor_text(id).is_empty() => format!("op-{}", anchor_text(id)),
            _ => format!("op-{}-{}", method.to_ascii_lowercase(), anchor_text(path)),
        };
        let mut anchor = base.clone();
        let mut n = 2;
        while !used.insert(anchor.clone()) {
            anchor = format!("{base}-{n}");
            n += 1;
        }

        // Operation parameters override path-level ones of the same name and place.
        let mut params: Vec<&Parameter> = Vec::new();
        for p in shared.iter().chain(&op.parameters) {
            let Some(p) = self.parameter(p) else { continue };
            let key = (location(p), &p.parameter_data_ref().name);
            params.retain(|q| (location(q), &q.parameter_data_ref().name) != key);
            params.push(p);
        }
        let parameters: Vec<ParameterDoc> = params.iter().map(|p| self.parameter_doc(p)).collect();

        let request_body = op
            .request_body
            .as_ref()
            .and_then(|b| {
                follow(b, "#/components/requestBodies/", |name| {
                    self.api.components.as_ref()?.request_bodies.get(name)
                })
            })
            .map(|b| self.body_doc(b));

        let mut responses = Vec::new();
        for (status, r) in &op.responses.responses {
            if let Some(r) = self.response(r) {
                responses.push(self.response_doc(status.to_string(), r));
            }
        }
        if let Some(r) = op.responses.default.as_ref().and_then(|r| self.response(r)) {
            responses.push(self.response_doc("default".into(), r));
        }

        let call = call(path, &parameters, request_body.as_ref());
        OperationDoc {
            anchor,
            method,
            path: path.to_owned(),
            summary: op.summary.clone().unwrap_or_default(),
            description: op.description.clone().unwrap_or_default(),
            deprecated: op.deprecated,
            parameters,
            request_body,
            responses,
            call,
        }
    }

    fn response(&self, r: &'a ReferenceOr<Response>) -> Option<&'a Response> {
        follow(r, "#/components/responses/", |name| {
            self.api.components.as_ref()?.responses.get(name)
        })
    }

    fn parameter_doc(&self, p: &Parameter) -> ParameterDoc {
        let data = p.parameter_data_ref();
        let schema = match &data.format {
            ParameterSchemaOrContent::Schema(s) => self.schema(s),
            ParameterSchemaOrContent::Content(c) => c
                .values()
                .next()
                .and_then(|m| m.schema.as_ref())
                .and_then(|s| self.schema(s)),
        };
        let example = data
            .example
            .clone()
            .or_else(|| {
                data.examples
                    .values()
                    .find_map(|e| e.as_item().and_then(|e| e.value.clone()))
            })
            .or_else(|| schema.map(|s| self.example(s, 0, &mut Vec::new())))
            .map(|v| text(&v))
            .unwrap_or_default();
        ParameterDoc {
            name: data.name.clone(),
            location: location(p),
            required: data.required || matches!(p, Parameter::Path { .. }),
            type_label: schema.map_or_else(|| "string".into(), |s| self.type_label(s)),
            description: data.description.clone().unwrap_or_default(),
            example,
        }
    }

    /// The JSON media type if there is one, else the first.
    fn media(content: &'a openapiv3::Content) -> Option<(&'a str, &'a MediaType)> {
        content
            .iter()
            .find(|(ct, _)| ct.contains("json"))
            .or_else(|| content.iter().next())
            .map(|(ct, m)| (ct.as_str(), m))
    }

    fn media_example(&self, content_type: &str, m: &'a MediaType) -> String {
        let value = m
            .example
            .clone()
            .or_else(|| {
                m.examples
                    .values()
                    .find_map(|e| e.as_item().and_then(|e| e.value.clone()))
            })
            .or_else(|| {
                let s = m.schema.as_ref()?;
                let mut seen = match s {
                    ReferenceOr::Reference { reference } => vec![reference.clone()],
                    ReferenceOr::Item(_) => Vec::new(),
                };
                self.schema(s).map(|s| self.example(s, 0, &mut seen))
            });
        match value {
            Some(Value::String(s)) if !content_type.contains("json") => s,
            Some(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            None => String::new(),
        }
    }

    fn fields(&self, m: &'a MediaType) -> Vec<FieldRow> {
        let mut rows = Vec::new();
        if let Some(s) = &m.schema {
            let mut seen = Vec::new();
            if let ReferenceOr::Reference { reference } = s {
                seen.push(reference.clone());
            }
            if let Some(schema) = self.schema(s) {
                self.rows(schema, 0, &mut rows, &mut seen);
                if rows.is_empty() {
                    rows.push(FieldRow {
                        depth: 0,
                        name: "(body)".into(),
                        type_label: self.type_label(schema),
                        required: true,
                        description: schema.schema_data.description.clone().unwrap_or_default(),
                    });
                }
            }
        }
        rows
    }

    fn body_doc(&self, b: &'a RequestBody) -> BodyDoc {
        let (content_type, fields, example) = match Self::media(&b.content) {
            Some((ct, m)) => (ct.to_owned(), self.fields(m), self.media_example(ct, m)),
            None => (String::new(), Vec::new(), String::new()),
        };
        BodyDoc {
            content_type,
            required: b.required,
            description: b.description.clone().unwrap_or_default(),
            fields,
            example,
        }
    }

    fn response_doc(&self, status: String, r: &'a Response) -> ResponseDoc {
        let (content_type, fields, example) = match Self::media(&r.content) {
            Some((ct, m)) => (ct.to_owned(), self.fields(m), self.media_example(ct, m)),
            None => (String::new(), Vec::new(), String::new()),
        };
        ResponseDoc {
            status,
            description: r.description.clone(),
            content_type,
            fields,
            example,
        }
    }

    fn type_label(&self, s: &Schema) -> String {
        let base = match &s.schema_kind {
            SchemaKind::Type(Type::String(t)) => with_format("string", format!("{:?}", t.format)),
            SchemaKind::Type(Type::Integer(t)) => with_format("integer", format!("{:?}", t.format)),
            SchemaKind::Type(Type::Number(t)) => with_format("number", format!("{:?}", t.format)),
            SchemaKind::Type(Type::Boolean(_)) => "boolean".into(),
            SchemaKind::Type(Type::Object(_)) => "object".into(),
            SchemaKind::Type(Type::Array(a)) => match &a.items {
                Some(ReferenceOr::Reference { reference }) => {
                    format!("array of {}", ref_name(reference))
                }
                Some(ReferenceOr::Item(item)) => format!("array of {}", self.type_label(item)),
                None => "array".into(),
            },
            SchemaKind::OneOf { one_of } => format!("one of {}", self.names(one_of)),
            SchemaKind::AnyOf { any_of } => format!("any of {}", self.names(any_of)),
            SchemaKind::AllOf { .. } => "object".into(),
            SchemaKind::Not { .. } => "any".into(),
            SchemaKind::Any(a) => a.typ.clone().unwrap_or_else(|| {
                if a.properties.is_empty() {
                    "any"
                } else {
                    "object"
                }
                .into()
            }),
        };
        if s.schema_data.nullable {
            format!("{base} or null")
        } else {
            base
        }
    }

    fn names(&self, list: &[ReferenceOr<Schema>]) -> String {
        list.iter()
            .map(|s| match s {
                ReferenceOr::Reference { reference } => ref_name(reference).to_owned(),
                ReferenceOr::Item(s) => self.type_label(s),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Properties of an object schema (allOf parts merged), with whether each is required.
    fn properties(&self, s: &'a Schema) -> Vec<(&'a str, &'a ReferenceOr<Box<Schema>>, bool)> {
        let mut out = Vec::new();
        self.collect_properties(s, &mut out, 0);
        out
    }

    fn collect_properties(
        &self,
        s: &'a Schema,
        out: &mut Vec<(&'a str, &'a ReferenceOr<Box<Schema>>, bool)>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let (props, required) = match &s.schema_kind {
            SchemaKind::Type(Type::Object(o)) => (&o.properties, &o.required),
            SchemaKind::Any(a) => (&a.properties, &a.required),
            SchemaKind::AllOf { all_of } => {
                for part in all_of {
                    if let Some(p) = self.schema(part) {
                        self.collect_properties(p, out, depth + 1);
                    }
                }
                return;
            }
            _ => return,
        };
        for (name, schema) in props {
            out.retain(|(n, _, _)| *n != name.as_str());
            out.push((name, schema, required.contains(name)));
        }
    }

    fn rows(&self, s: &'a Schema, depth: usize, rows: &mut Vec<FieldRow>, seen: &mut Vec<String>) {
        if depth > MAX_DEPTH {
            return;
        }
        for (name, prop, required) in self.properties(s) {
            let Some(ps) = self.boxed_schema(prop) else {
                continue;
            };
            let reference = match prop {
                ReferenceOr::Reference { reference } => Some(reference.clone()),
                ReferenceOr::Item(_) => None,
            };
            let recursive = reference.as_ref().is_some_and(|r| seen.contains(r));
            let mut type_label = self.type_label(ps);
            if let Some(r) = &reference {
                type_label = format!("{} ({type_label})", ref_name(r));
            }
            rows.push(FieldRow {
                depth,
                name: name.to_owned(),
                type_label,
                required,
                description: ps.schema_data.description.clone().unwrap_or_default(),
            });
            if recursive {
                continue;
            }
            if let Some(r) = &reference {
                seen.push(r.clone());
            }
            self.nested_rows(ps, depth + 1, rows, seen);
            if reference.is_some() {
                seen.pop();
            }
        }
    }

    /// Rows inside a field: an object's fields, or an array's items.
    fn nested_rows(
        &self,
        s: &'a Schema,
        depth: usize,
        rows: &mut Vec<FieldRow>,
        seen: &mut Vec<String>,
    ) {
        if let SchemaKind::Type(Type::Array(a)) = &s.schema_kind {
            let Some(items) = &a.items else { return };
            let Some(item) = self.boxed_schema(items) else {
                return;
            };
            let reference = match items {
                ReferenceOr::Reference { reference } => Some(reference.clone()),
                ReferenceOr::Item(_) => None,
            };
            if reference.as_ref().is_some_and(|r| seen.contains(r)) {
                return;
            }
            if let Some(r) = &reference {
                seen.push(r.clone());
            }
            self.rows(item, depth, rows, seen);
            if reference.is_some() {
                seen.pop();
            }
        } else {
            self.rows(s, depth, rows, seen);
        }
    }

    /// An example value for a schema: its own example, default or first enum
    /// value, else one made from its type.
    fn example(&self, s: &'a Schema, depth: usize, seen: &mut Vec<String>) -> Value {
        if let Some(v) = s
            .schema_data
            .example
            .clone()
            .or_else(|| s.schema_data.default.clone())
        {
            return v;
        }
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        match &s.schema_kind {
            SchemaKind::Type(Type::String(t)) => {
                if let Some(Some(v)) = t.enumeration.first() {
                    return Value::String(v.clone());
                }
                let format = format!("{:?}", t.format).to_ascii_lowercase();
                Value::String(
                    if format.contains("datetime") {
                        "2026-01-31T12:00:00Z"
                    } else if format.contains("date") {
                        "2026-01-31"
                    } else if format.contains("email") {
                        "user@example.com"
                    } else if format.contains("uuid") {
                        "3f2b8c1e-0d4a-4b7e-9c1a-2e5f6a7b8c9d"
                    } else if format.contains("uri") || format.contains("url") {
                        "https://example.com"
                    } else {
                        "string"
                    }
                    .into(),
                )
            }
            SchemaKind::Type(Type::Integer(t)) => match t.enumeration.first() {
                Some(Some(v)) => Value::from(*v),
                _ => Value::from(t.minimum.unwrap_or(0).max(0)),
            },
            SchemaKind::Type(Type::Number(t)) => match t.enumeration.first() {
                Some(Some(v)) => Value::from(*v),
                _ => Value::from(t.minimum.unwrap_or(0.0).max(0.0)),
            },
            SchemaKind::Type(Type::Boolean(_)) => Value::Bool(true),
            SchemaKind::Type(Type::Array(a)) => match &a.items {
                Some(items) => match self.boxed_schema(items) {
                    Some(item) if !self.is_seen(items, seen) => {
                        self.enter(items, seen, |this, seen| {
                            Value::Array(vec![this.example(item, depth + 1, seen)])
                        })
                    }
                    _ => Value::Array(Vec::new()),
                },
                None => Value::Array(Vec::new()),
            },
            SchemaKind::OneOf { one_of: list } | SchemaKind::AnyOf { any_of: list } => list
                .first()
                .and_then(|first| self.schema(first))
                .map_or(Value::Null, |f| self.example(f, depth + 1, seen)),
            SchemaKind::Not { .. } => Value::Null,
            SchemaKind::Type(Type::Object(o)) if o.properties.is_empty() => {
                Value::Object(Map::new())
            }
            SchemaKind::Type(Type::Object(_)) | SchemaKind::AllOf { .. } | SchemaKind::Any(_) => {
                let props = self.properties(s);
                if props.is_empty() {
                    if let SchemaKind::Any(a) = &s.schema_kind
                        && let Some(t) = &a.typ
                    {
                        return match t.as_str() {
                            "string" => Value::String("string".into()),
                            "integer" | "number" => Value::from(0),
                            "boolean" => Value::Bool(true),
                            "array" => Value::Array(Vec::new()),
                            _ => Value::Object(Map::new()),
                        };
                    }
                    return Value::Object(Map::new());
                }
                let mut map = Map::new();
                for (name, prop, _) in props {
                    if self.is_seen(prop, seen) {
                        continue;
                    }
                    if let Some(ps) = self.boxed_schema(prop) {
                        let v =
                            self.enter(prop, seen, |this, seen| this.example(ps, depth + 1, seen));
                        map.insert(name.to_owned(), v);
                    }
                }
                Value::Object(map)
            }
        }
    }

    fn is_seen(&self, s: &ReferenceOr<Box<Schema>>, seen: &[String]) -> bool {
        matches!(s, ReferenceOr::Reference { reference } if seen.contains(reference))
    }

    fn enter<T>(
        &self,
        s: &ReferenceOr<Box<Schema>>,
        seen: &mut Vec<String>,
        f: impl FnOnce(&Self, &mut Vec<String>) -> T,
    ) -> T {
        match s {
            ReferenceOr::Reference { reference } => {
                seen.push(reference.clone());
                let out = f(self, seen);
                seen.pop();
                out
            }
            ReferenceOr::Item(_) => f(self, seen),
        }
    }
}

fn with_format(base: &str, debug_format: String) -> String {
    // `VariantOrUnknownOrEmpty` prints as `Item(Int64)`, `Unknown("x")` or `Empty`.
    let inner = debug_format
        .trim_start_matches("Item(")
        .trim_start_matches("Unknown(")
        .trim_end_matches(')')
        .trim_matches('"')
        .to_ascii_lowercase();
    if inner.is_empty() || inner == "empty" {
        base.to_owned()
    } else {
        format!("{base} ({inner})")
    }
}

fn location(p: &Parameter) -> &'static str {
    match p {
        Parameter::Path { .. } => "path",
        Parameter::Query { .. } => "query",
        Parameter::Header { .. } => "header",
        Parameter::Cookie { .. } => "cookie",
    }
}

/// Characters left as they are in a path segment or query component.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The call a sample makes: path parameters filled with their examples (or
/// their names), required query and header parameters with examples, and the
/// example body.
fn call(path: &str, params: &[ParameterDoc], body: Option<&BodyDoc>) -> Call {
    let value = |p: &ParameterDoc| {
        if p.example.is_empty() {
            p.name.to_ascii_uppercase()
        } else {
            p.example.clone()
        }
    };
    let mut filled = path.to_owned();
    for p in params.iter().filter(|p| p.location == "path") {
        filled = filled.replace(&format!("{{{}}}", p.name), &encode(&value(p)));
    }
    let query = params
        .iter()
        .filter(|p| p.location == "query" && p.required)
        .map(|p| format!("{}={}", encode(&p.name), encode(&value(p))))
        .collect::<Vec<_>>()
        .join("&");
    let headers = params
        .iter()
        .filter(|p| p.location == "header" && p.required)
        .map(|p| (p.name.clone(), value(p)))
        .collect();
    let body = body.filter(|b| !b.content_type.is_empty()).map(|b| {
        let example = if b.example.is_empty() && b.content_type.contains("json") {
            "{}".to_owned()
        } else {
            b.example.clone()
        };
        (b.content_type.clone(), example)
    });
    Call {
        path: filled,
        query,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn openapi_31_documents_are_read() {
        let doc = json!({
            "openapi": "3.1.0",
            "info": {"title": "Pets", "version": "2", "license": {"name": "MIT", "identifier": "MIT"}},
            "webhooks": {"newPet": {"post": {"responses": {"200": {"description": "ok"}}}}},
            "paths": {"/pets/{id}": {"get": {
                "tags": ["pets"],
                "parameters": [{"name": "id", "in": "path", "required": true,
                    "schema": {"type": "integer", "exclusiveMinimum": 0}}],
                "responses": {"200": {"description": "A pet", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Pet"}}}}}
            }}},
            "components": {"schemas": {"Pet": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "examples": ["Rex"]},
                "nickname": {"type": ["string", "null"]},
                "kind": {"const": "dog"},
                "age": {"type": "integer", "exclusiveMaximum": 40}
            }}}}
        });
        let down = downlevel_31(&doc);
        let pet = &down["components"]["schemas"]["Pet"]["properties"];
        assert_eq!(pet["nickname"], json!({"type": "string", "nullable": true}));
        assert_eq!(pet["name"], json!({"type": "string", "example": "Rex"}));
        assert_eq!(pet["kind"], json!({"enum": ["dog"]}));
        assert_eq!(
            pet["age"],
            json!({"type": "integer", "maximum": 40, "exclusiveMaximum": true})
        );
        let docs = read(&doc).expect("a 3.1 document reads");
        let text = format!("{docs:?}");
        assert!(
            text.contains("/pets/{id}") && text.contains("Rex"),
            "{text}"
        );
        // Without paths (allowed in 3.1).
        read(&json!({"openapi": "3.1.0", "info": {"title": "Hooks only", "version": "1"}}))
            .expect("a document without paths reads");
    }

    fn doc() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Notes", "version": "1.2", "description": "Keep <b>notes</b>"},
            "tags": [{"name": "notes", "description": "Your notes"}, {"name": "unused"}],
            "paths": {
                "/notes/{id}": {
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64"}, "example": 42}],
                    "get": {
                        "tags": ["notes"], "operationId": "getNote", "summary": "One note",
                        "parameters": [{"$ref": "#/components/parameters/Verbose"}],
                        "responses": {
                            "200": {"description": "The note", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}}}},
                            "404": {"$ref": "#/components/responses/NotFound"}
                        }
                    },
                    "put": {
                        "tags": ["notes"],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}, "example": {"text": "hi"}}}},
                        "responses": {"204": {"description": "Saved"}}
                    }
                },
                "/health": {"get": {"responses": {"200": {"description": "OK"}}}}
            },
            "components": {
                "parameters": {"Verbose": {"name": "verbose", "in": "query", "required": true, "schema": {"type": "boolean"}}},
                "responses": {"NotFound": {"description": "No such note"}},
                "schemas": {
                    "Note": {"type": "object", "required": ["text"], "properties": {
                        "text": {"type": "string", "description": "The text"},
                        "created": {"type": "string", "format": "date-time"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "parent": {"$ref": "#/components/schemas/Note"},
                        "author": {"$ref": "#/components/schemas/Person"}
                    }},
                    "Person": {"allOf": [{"$ref": "#/components/schemas/Named"}, {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}]},
                    "Named": {"type": "object", "properties": {"name": {"type": "string", "example": "Ada"}}}
                }
            }
        })
    }

    #[test]
    fn operations_are_grouped_by_tag_with_refs_resolved() {
        let d = read(&doc()).unwrap();
        assert_eq!((d.title.as_str(), d.version.as_str()), ("Notes", "1.2"));
        let names: Vec<_> = d.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["notes", "Endpoints"], "empty tags are left out");
        let get = &d.groups[0].operations[0];
        assert_eq!(
            (get.method.as_str(), get.anchor.as_str()),
            ("GET", "op-getnote")
        );
        let params: Vec<_> = get
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.location, p.required))
            .collect();
        assert_eq!(params, [("id", "path", true), ("verbose", "query", true)]);
        assert_eq!(get.parameters[0].type_label, "integer (int64)");
        assert_eq!(get.call.path, "/notes/42");
        assert_eq!(get.call.query, "verbose=true");
        let statuses: Vec<_> = get
            .responses
            .iter()
            .map(|r| (r.status.as_str(), r.description.as_str()))
            .collect();
        assert_eq!(statuses, [("200", "The note"), ("404", "No such note")]);

        let fields: Vec<_> = get.responses[0]
            .fields
            .iter()
            .map(|f| (f.depth, f.name.as_str(), f.required))
            .collect();
        assert_eq!(
            fields,
            // Stored documents keep JSON objects sorted by key.
            [
                (0, "author", false),
                (1, "name", false),
                (1, "email", false),
                (0, "created", false),
                (0, "parent", false),
                (0, "tags", false),
                (0, "text", true),
            ],
            "the self-reference is named, not expanded"
        );
        assert_eq!(get.responses[0].fields[4].type_label, "Note (object)");
        let example: Value = serde_json::from_str(&get.responses[0].example).unwrap();
        assert_eq!(
            example,
            json!({"text": "string", "created": "2026-01-31T12:00:00Z", "tags": ["string"],
                   "author": {"name": "Ada", "email": "user@example.com"}})
        );

        let put = &d.groups[0].operations[1];
        assert_eq!(put.anchor, "op-put-notes-id");
        let body = put.request_body.as_ref().unwrap();
        assert!(body.required);
        assert_eq!(
            put.call.body,
            Some(("application/json".into(), "{\n  \"text\": \"hi\"\n}".into()))
        );
        assert_eq!(d.groups[1].operations[0].path, "/health");
    }

    #[test]
    fn tags_and_summary_without_parsing() {
        assert_eq!(tags(&doc()), ["notes", "unused"]);
        assert_eq!(summary(&doc()), "Keep <b>notes</b>");
        assert!(tags(&json!({"openapi": "3.0.0"})).is_empty());
    }

    #[test]
    fn unreadable_documents_are_an_error_not_a_panic() {
        assert!(read(&json!({"openapi": "3.0.0"})).is_err());
        assert!(read(&json!({"openapi": "3.0.0", "info": {"title": "x", "version": "1"}, "paths": {"/a": {"get": {"responses": {"200": {"$ref": "#/nowhere"}}}}}})).is_ok());
        // A reference loop ends.
        let looped = json!({"openapi": "3.0.0", "info": {"title": "x", "version": "1"},
            "paths": {"/a": {"get": {"responses": {"200": {"description": "x", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}},
            "components": {"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}}});
        let d = read(&looped).unwrap();
        assert!(d.groups[0].operations[0].responses[0].fields.is_empty());
    }

    #[test]
    fn path_values_are_percent_encoded() {
        let params = vec![ParameterDoc {
            name: "id".into(),
            location: "path",
            required: true,
            type_label: "string".into(),
            description: String::new(),
            example: "a/b c'".into(),
        }];
        assert_eq!(call("/x/{id}", &params, None).path, "/x/a%2Fb%20c%27");
    }
}
