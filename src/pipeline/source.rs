//! TOML parsed into owned values that remember where they came from, so every later
//! check can point at the exact text.

use std::ops::Range;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, PipelineError, SourceFile};

/// A key with its span.
#[derive(Clone, Debug)]
pub struct SKey {
    pub name: String,
    pub span: Range<usize>,
}

/// A TOML value with its span.
#[derive(Clone, Debug)]
pub struct SValue {
    pub span: Range<usize>,
    pub kind: SKind,
}

#[derive(Clone, Debug)]
pub enum SKind {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Datetime(String),
    Array(Vec<SValue>),
    Table(Vec<(SKey, SValue)>),
}

impl SValue {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            SKind::Bool(_) => "boolean",
            SKind::Int(_) => "integer",
            SKind::Float(_) => "float",
            SKind::Str(_) => "string",
            SKind::Datetime(_) => "datetime",
            SKind::Array(_) => "array",
            SKind::Table(_) => "table",
        }
    }

    pub fn as_table(&self) -> Option<&[(SKey, SValue)]> {
        match &self.kind {
            SKind::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            SKind::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Parse a whole file; a syntax error becomes a diagnostic at its position.
pub fn parse(source: &Arc<SourceFile>) -> Result<Vec<(SKey, SValue)>, PipelineError> {
    match DeTable::parse(&source.text) {
        Ok(table) => {
            let span = table.span();
            match convert_table(table.into_inner(), span).kind {
                SKind::Table(t) => Ok(t),
                _ => unreachable!("a document is a table"),
            }
        }
        Err(e) => {
            let message = e.message().trim().to_owned();
            let span = e.span().or_else(|| first_line_failing(&source.text, &message));
            Err(PipelineError::single(
                source.clone(),
                Diagnostic::new(format!("invalid TOML: {message}"), span),
            ))
        }
    }
}

/// For a TOML error that comes without a position (the parser's recursion limit): the
/// first line whose prefix of the file fails with the same message, by bisection.
fn first_line_failing(text: &str, message: &str) -> Option<Range<usize>> {
    let ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).chain([text.len()]).collect();
    let fails = |k: usize| DeTable::parse(&text[..ends[k]]).err().is_some_and(|e| e.message().trim() == message);
    let last = ends.len() - 1;
    if !fails(last) {
        return None;
    }
    let (mut lo, mut hi) = (0, last);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let start = if lo == 0 { 0 } else { ends[lo - 1] };
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    Some(start..end.max(start + 1).min(text.len().max(start + 1)))
}

/// Parse a single value as typed on the command line (`--set a.b=VALUE`): TOML syntax
/// when it parses, otherwise the raw text as a string.
pub fn parse_cli_value(text: &str) -> SValue {
    match DeValue::parse(text) {
        Ok(v) => {
            let span = v.span();
            convert_value(v.into_inner(), span)
        }
        Err(_) => SValue { span: 0..0, kind: SKind::Str(text.to_owned()) },
    }
}

fn convert_table(table: DeTable<'_>, span: Range<usize>) -> SValue {
    let entries = table
        .into_iter()
        .map(|(k, v)| {
            let key = SKey { name: k.get_ref().to_string(), span: k.span() };
            let vspan = v.span();
            (key, convert_value(v.into_inner(), vspan))
        })
        .collect();
    SValue { span, kind: SKind::Table(entries) }
}

fn convert_value(value: DeValue<'_>, span: Range<usize>) -> SValue {
    let kind = match value {
        DeValue::String(s) => SKind::Str(s.into_owned()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => SKind::Int(n),
            // Out of i64 range: keep it as a float, sign and magnitude included, so type
            // checks can say what was written.
            Err(_) => SKind::Float(match i.radix() {
                10 => i.as_str().replace('_', "").parse::<f64>().unwrap_or(f64::INFINITY),
                _ => f64::INFINITY,
            }),
        },
        DeValue::Float(f) => SKind::Float(parse_float(f.as_str())),
        DeValue::Boolean(b) => SKind::Bool(b),
        DeValue::Datetime(d) => SKind::Datetime(d.to_string()),
        DeValue::Array(items) => SKind::Array(
            items
                .into_iter()
                .map(|item| {
                    let s = item.span();
                    convert_value(item.into_inner(), s)
                })
                .collect(),
        ),
        DeValue::Table(t) => return convert_table(t, span),
    };
    SValue { span, kind }
}

fn parse_float(text: &str) -> f64 {
    let clean = text.replace('_', "");
    match clean.as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" | "+nan" | "-nan" => f64::NAN,
        other => other.parse().unwrap_or(f64::NAN),
    }
}
