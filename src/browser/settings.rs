//! The `browser:` section of flows.yaml as the browser takes it, and the
//! Chromium launch it makes ([`BrowserConfig::chrome`]): the browser
//! decides how it is started; `config` only reads and checks the section.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::chrome::ChromeConfig;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BrowserConfig {
    pub headless: bool,
    /// `None` means find one (`BATON_CHROME`, then PATH).
    pub executable: Option<PathBuf>,
    pub profile_dir: PathBuf,
    /// Attach to a running browser instead of launching one.
    pub connect: Option<String>,
    /// How long an action waits for its element; the bound of every
    /// browser call.
    pub timeout: Duration,
    /// Extra Chromium switches, as bare keys (`disable-gpu`, `lang=en`).
    pub args: Vec<String>,
    /// How many sessions may have a page opened ahead of their next run.
    pub spare_pages: usize,
    /// Kinds of request pages never make.
    pub block: Vec<super::Blocked>,
    /// Several browsers to spread sessions over (`browser.pool`); empty
    /// for one browser.
    pub pool: Vec<super::pool::Endpoint>,
}

impl BrowserConfig {
    /// How to launch (or attach to) Chromium as this section says, with the
    /// profile in `profile_dir`.
    pub fn chrome(&self, profile_dir: PathBuf) -> ChromeConfig {
        ChromeConfig {
            executable: self.executable.clone(),
            headless: self.headless,
            profile_dir,
            connect: self.connect.clone(),
            args: self.args.clone(),
            spare_pages: self.spare_pages,
            block: self.block.clone(),
        }
    }
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            headless: true,
            executable: None,
            profile_dir: PathBuf::from(".baton/profile"),
            connect: None,
            timeout: Duration::from_secs(10),
            args: Vec::new(),
            spare_pages: super::chrome::SPARE_PAGES,
            block: Vec::new(),
            pool: Vec::new(),
        }
    }
}
