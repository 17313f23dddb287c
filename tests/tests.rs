#![allow(unreachable_pub)] // test helpers are `pub` so that every topic module can use them
//! The single integration-test binary (everything links once). Each module is a topic; shared
//! scaffolding lives in `util`.

mod util;

mod auth;
mod auth_cli;
mod auth_groups;
mod auth_usage;
mod authz;
mod authz_table;
mod cli;
mod cli_delivery;
mod delivery_control;
mod delivery_feeds;
mod delivery_push;
mod delivery_services;
mod delivery_streams;
mod directory;
mod failover;
mod faults;
mod fuzz_corpora;
mod groups;
mod hostile;
mod liveness;
mod metrics;
mod nat;
mod node;
mod overlay;
mod pn_admin;
mod pn_establishment;
mod pn_management;
mod pn_merge;
mod pn_merge_crash;
mod pn_merge_services;
mod pn_switch;
mod proxy_expose;
mod renewal;
mod typical_flow;
mod web;
mod zone;
