//! Pipeline-file errors that point at the offending text: `file:line:col`, the quoted
//! line with a caret underline, and a suggestion where one exists.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// A pipeline file's text, shared by every diagnostic about it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or("")
    }
}

/// One problem in a pipeline file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Range<usize>>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Diagnostic { message: message.into(), span, help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Add "did you mean `x`?" when a close candidate exists.
    pub fn suggest<'a>(self, typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match closest(typed, candidates) {
            Some(best) => self.help(format!("did you mean `{best}`?")),
            None => self,
        }
    }
}

/// Every problem found in one pipeline file (validation reports them all at once).
#[derive(Debug, Clone)]
pub struct PipelineError {
    pub source: Arc<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
}

impl PipelineError {
    pub fn single(source: Arc<SourceFile>, diagnostic: Diagnostic) -> Self {
        PipelineError { source, diagnostics: vec![diagnostic] }
    }

    /// `file:line:col` of the first diagnostic (used by tests and one-line output).
    pub fn location(&self) -> String {
        let d = &self.diagnostics[0];
        match &d.span {
            Some(span) => {
                let (l, c) = self.source.line_col(span.start);
                format!("{}:{l}:{c}", self.source.path.display())
            }
            None => self.source.path.display().to_string(),
        }
    }
}

impl std::error::Error for PipelineError {}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", d.message)?;
            match &d.span {
                Some(span) => {
                    let (line, col) = self.source.line_col(span.start);
                    let gutter = line.to_string().len();
                    writeln!(f, "{:gutter$}--> {}:{line}:{col}", "", self.source.path.display())?;
                    writeln!(f, "{:gutter$} |", "")?;
                    let text = self.source.line_text(line);
                    let (end_line, end_col) = self.source.line_col(span.end.max(span.start + 1) - 1);
                    let width = if end_line == line { (end_col + 1).saturating_sub(col).max(1) } else { text.chars().count().saturating_sub(col - 1).max(1) };
                    let (shown, pad, width) = window(text, col, width);
                    writeln!(f, "{line} | {shown}")?;
                    writeln!(f, "{:gutter$} | {}{}", "", " ".repeat(pad), "^".repeat(width))?;
                }
                None => writeln!(f, " --> {}", self.source.path.display())?,
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        Ok(())
    }
}

/// The part of a source line to quote around column `col` (1-based), with the caret's
/// offset and width in it: long lines (minified or generated files) are cut to a window
/// marked with `...`.
fn window(text: &str, col: usize, width: usize) -> (String, usize, usize) {
    const BEFORE: usize = 40;
    const SHOWN: usize = 120;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= SHOWN {
        return (text.to_owned(), col - 1, width);
    }
    let start = (col - 1).saturating_sub(BEFORE);
    let end = (start + SHOWN).min(chars.len());
    let mut shown = String::new();
    if start > 0 {
        shown.push_str("...");
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push_str("...");
    }
    let pad = col - 1 - start + if start > 0 { 3 } else { 0 };
    (shown, pad, width.min(end.saturating_sub(col - 1)).max(1))
}

/// Levenshtein distance, for suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a third of the typed length (at least 2 edits).
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(typed, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_closest_word() {
        assert_eq!(closest("record_evry", ["record_every", "epochs", "runs"]), Some("record_every"));
        assert_eq!(closest("zzz", ["record_every", "epochs"]), None);
    }

    #[test]
    fn rendering_points_at_line_and_column() {
        let src = Arc::new(SourceFile { path: "p.toml".into(), text: "[stage.a]\nkind = \"nope\"\n".into() });
        let err = PipelineError::single(src, Diagnostic::new("unknown kind `nope`", Some(17..23)));
        assert_eq!(err.location(), "p.toml:2:8");
        let text = err.to_string();
        assert!(text.contains("2 | kind = \"nope\""), "{text}");
        assert!(text.contains("       ^^^^^^"), "{text}");
    }

    #[test]
    fn an_error_far_along_a_long_line_quotes_a_window_around_it() {
        let line = format!("x = \"{}\" bad", "y".repeat(70_000));
        let at = line.find("bad").unwrap();
        let src = Arc::new(SourceFile { path: "p.toml".into(), text: format!("{line}\n") });
        let text = PipelineError::single(src, Diagnostic::new("unexpected", Some(at..at + 3))).to_string();
        assert!(text.contains(&format!("p.toml:1:{}", at + 1)), "{text}");
        let quoted = text.lines().find(|l| l.starts_with("1 | ")).unwrap();
        let caret = text.lines().find(|l| l.contains('^')).unwrap();
        assert!(quoted.len() < 200 && quoted.starts_with("1 | ...") && quoted.ends_with("\" bad"), "{quoted}");
        assert_eq!(&quoted[caret.find('^').unwrap()..caret.find('^').unwrap() + 3], "bad", "{quoted}\n{caret}");
    }
}
