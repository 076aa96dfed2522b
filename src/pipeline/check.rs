//! Type checks of TOML values against a kind's parameter schema, with coercion to the
//! canonical [`Value`] that keys are computed from.

use std::collections::BTreeMap;
use std::ops::Range;

use wfpipe_stages::kind::{ParamType, Value};

use super::diagnostic::Diagnostic;
use super::refsel::RefSel;
use super::source::{SKind, SValue};

/// Spans of values typed with `--set` on the command line point nowhere in the file.
pub const CLI_SPAN: Range<usize> = usize::MAX..usize::MAX;

pub fn span_of(v: &SValue) -> Option<Range<usize>> {
    (v.span != CLI_SPAN).then(|| v.span.clone())
}

fn mismatch(name: &str, ty: &ParamType, v: &SValue) -> Diagnostic {
    Diagnostic::new(
        format!("`{name}` must be {}, found {} `{}`", ty.describe(), v.type_name(), short(v)),
        span_of(v),
    )
}

/// A short rendering of a value for messages.
pub fn short(v: &SValue) -> String {
    let s = match &v.kind {
        SKind::Bool(b) => b.to_string(),
        SKind::Int(i) => i.to_string(),
        SKind::Float(f) => f.to_string(),
        SKind::Str(s) => format!("\"{s}\""),
        SKind::Datetime(d) => d.clone(),
        SKind::Array(_) => "[...]".into(),
        SKind::Table(_) => "{...}".into(),
    };
    if s.len() > 40 {
        format!("{}...", &s[..37])
    } else {
        s
    }
}

/// Check `v` against `ty` and return the canonical value.
pub fn check_value(name: &str, ty: &ParamType, v: &SValue) -> Result<Value, Diagnostic> {
    match (ty, &v.kind) {
        (ParamType::Bool, SKind::Bool(b)) => Ok(Value::Bool(*b)),
        (ParamType::Int { min, max }, SKind::Int(i)) => {
            if min.is_some_and(|m| *i < m) || max.is_some_and(|m| *i > m) {
                Err(Diagnostic::new(format!("`{name}` must be {}, found {i}", ty.describe()), span_of(v)))
            } else {
                Ok(Value::Int(*i))
            }
        }
        (ParamType::Float { min, max }, SKind::Int(_) | SKind::Float(_)) => {
            let x = match v.kind {
                SKind::Int(i) => i as f64,
                SKind::Float(f) => f,
                _ => unreachable!(),
            };
            if !x.is_finite() {
                return Err(Diagnostic::new(format!("`{name}` must be a finite number, found {x}"), span_of(v)));
            }
            if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                Err(Diagnostic::new(format!("`{name}` must be {}, found {x}", ty.describe()), span_of(v)))
            } else {
                Ok(Value::Float(x))
            }
        }
        (ParamType::Str, SKind::Str(s)) => Ok(Value::Str(s.clone())),
        (ParamType::Enum(words), SKind::Str(s)) => {
            if words.contains(&s.as_str()) {
                Ok(Value::Str(s.clone()))
            } else {
                Err(Diagnostic::new(
                    format!("`{name}` must be {}, found \"{s}\"", ty.describe()),
                    span_of(v),
                )
                .suggest(s, words.iter().copied()))
            }
        }
        (ParamType::IntList, SKind::Array(items)) => items
            .iter()
            .map(|item| match item.kind {
                SKind::Int(i) => Ok(Value::Int(i)),
                _ => Err(mismatch(name, ty, item)),
            })
            .collect::<Result<_, _>>()
            .map(Value::List),
        (ParamType::FloatList, SKind::Array(items)) => items
            .iter()
            .map(|item| check_value(name, &ParamType::FLOAT, item).map_err(|_| mismatch(name, ty, item)))
            .collect::<Result<_, _>>()
            .map(Value::List),
        (ParamType::StrList, SKind::Array(items)) => items
            .iter()
            .map(|item| match &item.kind {
                SKind::Str(s) => Ok(Value::Str(s.clone())),
                _ => Err(mismatch(name, ty, item)),
            })
            .collect::<Result<_, _>>()
            .map(Value::List),
        (ParamType::StrMap, SKind::Table(entries)) => {
            let mut map = BTreeMap::new();
            for (k, item) in entries {
                let s = scalar_string(item).ok_or_else(|| {
                    Diagnostic::new(
                        format!("`{name}.{}` must be a string or number, found {}", k.name, item.type_name()),
                        span_of(item),
                    )
                })?;
                map.insert(k.name.clone(), Value::Str(s));
            }
            Ok(Value::Table(map))
        }
        (ParamType::File, SKind::Str(s)) => {
            crate::project_path::check_relative_path(s).map_err(|why| Diagnostic::new(format!("`{name}`: {why}"), span_of(v)))?;
            Ok(Value::Str(s.clone()))
        }
        (ParamType::FileList, SKind::Array(items)) => items
            .iter()
            .map(|item| match &item.kind {
                SKind::Str(s) => crate::project_path::check_relative_path(s)
                    .map(|_| Value::Str(s.clone()))
                    .map_err(|why| Diagnostic::new(format!("`{name}`: {why}"), span_of(item))),
                _ => Err(mismatch(name, ty, item)),
            })
            .collect::<Result<_, _>>()
            .map(Value::List),
        (ParamType::Ref { .. }, SKind::Str(s)) => {
            if !s.is_empty() {
                RefSel::parse(s).map_err(|why| Diagnostic::new(why, span_of(v)))?;
            }
            Ok(Value::Str(s.clone()))
        }
        (ParamType::RefList, SKind::Array(items)) => items
            .iter()
            .map(|item| match &item.kind {
                SKind::Str(s) => RefSel::parse(s)
                    .map(|_| Value::Str(s.clone()))
                    .map_err(|why| Diagnostic::new(why, span_of(item))),
                _ => Err(mismatch(name, ty, item)),
            })
            .collect::<Result<_, _>>()
            .map(Value::List),
        // A single reference where a list is expected is accepted as a list of one.
        (ParamType::RefList, SKind::Str(_)) => {
            check_value(name, ty, &SValue { span: v.span.clone(), kind: SKind::Array(vec![v.clone()]) })
        }
        _ => Err(mismatch(name, ty, v)),
    }
}

/// Strings and numbers as strings (environment variables, command placeholders).
pub fn scalar_string(v: &SValue) -> Option<String> {
    match &v.kind {
        SKind::Str(s) => Some(s.clone()),
        SKind::Int(i) => Some(i.to_string()),
        SKind::Float(f) => Some(f.to_string()),
        SKind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

