//! `{stage.param}` in a stage's `title`: replaced by the value that stage runs with, so a
//! caption cannot drift from the parameters it describes ("{samples.steps} Euler steps").
//! A parameter the stage sweeps has no single value and is refused, as are unknown names.

use wfpipe_stages::kind::Value;

use super::diagnostic::Diagnostic;
use super::StageDef;

/// The parameter whose placeholders are filled.
const CAPTION: &str = "title";

/// Fill every stage's `title`; a bad placeholder is a diagnostic at the title.
pub fn fill(stages: &mut [StageDef], diags: &mut Vec<Diagnostic>) {
    for i in 0..stages.len() {
        let Some(Value::Str(title)) = stages[i].params.get(CAPTION) else { continue };
        if !title.contains('{') {
            continue;
        }
        match expand(title, stages) {
            Ok(filled) => {
                stages[i].params.insert(CAPTION.to_owned(), Value::Str(filled));
            }
            Err((message, help)) => {
                let span = stages[i].param_spans.get(CAPTION).cloned().flatten();
                diags.push(Diagnostic::new(message, span).help(help));
            }
        }
    }
}

/// `text` with each `{stage.param}` replaced; other braces are left as written.
fn expand(text: &str, stages: &[StageDef]) -> Result<String, (String, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let reference = after.find('}').map(|close| &after[..close]).and_then(|inner| inner.split_once('.').map(|(s, p)| (inner, s, p)));
        match reference {
            Some((inner, stage, param)) if is_name(stage) && is_name(param) => {
                out.push_str(&value_of(stages, stage, param)?);
                rest = &after[inner.len() + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn value_of(stages: &[StageDef], stage: &str, param: &str) -> Result<String, (String, String)> {
    let Some(def) = stages.iter().find(|s| s.name == stage) else {
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        return Err((format!("the title names stage `{stage}`, which this pipeline does not have"), format!("stages: {}", names.join(", "))));
    };
    let swept = def.axes.iter().flat_map(|g| &g.axes).find(|a| a.target.param() == param);
    let value = match swept {
        Some(axis) if axis.values.len() == 1 => axis.values[0].clone(),
        Some(axis) => {
            return Err((
                format!("the title names `{stage}.{param}`, which `{stage}` sweeps over {} values", axis.values.len()),
                "a caption can only state a value every instance shares; name the axis in the table's rows instead".to_owned(),
            ))
        }
        None => match def.params.get(param) {
            Some(v) => v.clone(),
            None => {
                let names: Vec<&str> = def.params.keys().map(String::as_str).collect();
                return Err((format!("the title names `{stage}.{param}`, but `{stage}` has no parameter `{param}`"), format!("its parameters: {}", names.join(", "))));
            }
        },
    };
    Ok(render(&value))
}

/// Whole numbers with thousands separators (4,000), everything else as written.
fn render(value: &Value) -> String {
    match value {
        Value::Int(i) if i.abs() >= 1000 => {
            let digits = i.abs().to_string();
            let mut grouped = String::new();
            for (k, c) in digits.chars().enumerate() {
                if k > 0 && (digits.len() - k) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            if *i < 0 {
                format!("-{grouped}")
            } else {
                grouped
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Registry;
    use std::path::Path;

    #[test]
    fn a_title_states_the_values_its_stages_run_with() {
        let text = r#"
[stage.runs]
kind = "collect"
dataset = "uci-wdbc"
runs = 3
epochs = 2500
skip_epochs = 1
matrix.lr = [0.05]

[stage.eval]
kind = "evaluate"
weights = "runs"
dataset = "uci-wdbc"

[table.t]
from = ["eval"]
metrics = ["accuracy"]
title = "{runs.runs} runs of {runs.epochs} epochs at lr {runs.lr}, {eval.split} split; {not a placeholder} {runs}"
"#;
        let p = super::super::load_str(Path::new("captions.toml"), text.to_owned(), &[], &Registry::standard()).expect("pipeline loads");
        let table = p.stages.iter().find(|s| s.name == "t").unwrap();
        assert_eq!(table.params["title"], Value::Str("3 runs of 2,500 epochs at lr 0.05, test split; {not a placeholder} {runs}".into()));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(render(&Value::Int(4000)), "4,000");
        assert_eq!(render(&Value::Int(250000)), "250,000");
        assert_eq!(render(&Value::Int(64)), "64");
        assert_eq!(render(&Value::Float(0.01)), "0.01");
    }
}
