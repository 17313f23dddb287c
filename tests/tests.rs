//! The single integration-test binary (everything links once). Each module is a topic; shared
//! scaffolding lives in `util`.

mod util;

mod overlay;
mod auth;
mod directory;
mod pn_establishment;
mod typical_flow;
mod cli;
