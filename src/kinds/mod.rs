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
