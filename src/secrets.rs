//! Secret values by name, read from the environment by `config` and handed
//! to scripts through `secret(name)`. Kept apart from `config` so the script
//! host needs nothing of the configuration file; `redact` masks the values.

use std::collections::BTreeMap;
use std::fmt;

/// Secret values by name, from the environment. Their `Debug` shows names
/// only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Secrets {
        Secrets { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }
}
