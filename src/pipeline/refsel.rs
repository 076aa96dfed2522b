//! Stage references: `"stage"` or `"stage[axis=value,...]"` (a subset of its instances).

use std::collections::BTreeMap;

/// A parsed reference: the stage and the axis values its instances must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefSel {
    pub stage: String,
    pub filters: BTreeMap<String, String>,
}

/// Stage names become folder-free instance ids: letters, digits, `-`, `_` and `.`, not
/// starting with a dot, so no name can escape a directory.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl RefSel {
    pub fn parse(text: &str) -> Result<RefSel, String> {
        let text = text.trim();
        let (stage, rest) = match text.find('[') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        if !is_valid_name(stage) {
            return Err(format!("`{text}` is not a stage reference (expected `stage` or `stage[axis=value,...]`)"));
        }
        let mut filters = BTreeMap::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("unclosed `[` in reference `{text}`"))?;
            for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (axis, value) = part
                    .split_once('=')
                    .ok_or_else(|| format!("`{part}` in reference `{text}` is not `axis=value`"))?;
                let (axis, value) = (axis.trim(), value.trim().trim_matches('"'));
                if axis.is_empty() || value.is_empty() {
                    return Err(format!("`{part}` in reference `{text}` is not `axis=value`"));
                }
                if filters.insert(axis.to_owned(), value.to_owned()).is_some() {
                    return Err(format!("axis `{axis}` appears twice in reference `{text}`"));
                }
            }
        }
        Ok(RefSel { stage: stage.to_owned(), filters })
    }

    /// Whether an instance with these axis values has every value the selection names
    /// (the stage is checked by the caller).
    pub fn admits<V: std::fmt::Display>(&self, axes: &BTreeMap<String, V>) -> bool {
        self.filters.iter().all(|(k, v)| axes.get(k).is_some_and(|x| x.to_string() == *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_filtered_references() {
        assert_eq!(RefSel::parse("flow").unwrap().stage, "flow");
        let r = RefSel::parse("flow[geometry=euclidean, coupling=ot]").unwrap();
        assert_eq!(r.filters["geometry"], "euclidean");
        assert_eq!(r.filters["coupling"], "ot");
        assert!(RefSel::parse("../etc").is_err());
        assert!(RefSel::parse("flow[geometry]").is_err());
        assert!(RefSel::parse("flow[geometry=a").is_err());
    }
}
