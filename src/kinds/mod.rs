//! The registry of stage kinds: the science kinds of `wfpipe-stages` plus the kinds the
//! orchestrator provides itself (`command`, and the aggregation kinds).

pub mod claim;
pub mod command;
pub mod figure;
pub mod table;

use wfpipe_stages::kind::StageKind;

pub struct Registry {
    kinds: Vec<Box<dyn StageKind>>,
}

impl Registry {
    /// Every kind wfpipe knows.
    pub fn standard() -> Self {
        let mut kinds = wfpipe_stages::registry();
        kinds.push(Box::new(command::Command));
        kinds.push(Box::new(table::Table));
        kinds.push(Box::new(claim::Claim));
        kinds.push(Box::new(figure::Figure));
        kinds.sort_by_key(|k| k.name());
        Registry { kinds }
    }

    pub fn get(&self, name: &str) -> Option<&dyn StageKind> {
        self.kinds.iter().find(|k| k.name() == name).map(|k| k.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn StageKind> {
        self.kinds.iter().map(|k| k.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::Registry;

    /// Every kind's schema (names, types, defaults, whether a default enters the key, docs)
    /// against `tests/snapshots/schemas.txt`: the defaults fill every instance's parameters,
    /// so a change here changes keys or `wfpipe kinds`, and must be deliberate
    /// (`WFPIPE_BLESS=1` rewrites the snapshot).
    #[test]
    fn every_kinds_schema_matches_its_snapshot() {
        let mut text = String::new();
        for kind in Registry::standard().iter() {
            text.push_str(&format!("{} v{}\n", kind.name(), kind.version()));
            for spec in kind.params() {
                text.push_str(&format!(
                    "  {} {:?} default={:?} keyed_at_default={} doc={:?}\n",
                    spec.name, spec.ty, spec.default, spec.keyed_at_default, spec.doc
                ));
            }
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/schemas.txt");
        if std::env::var_os("WFPIPE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(want == text, "schemas differ from {}; got:\n{text}", path.display());
    }
}
