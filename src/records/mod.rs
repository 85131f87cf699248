//! The records service process: ingest, hash chain, store, queries, exports,
//! verification and roles. Imports only the contract.
//!
//! [`service`] authorises ([`auth`]) and hands events to the [`ledger`], which
//! chains them ([`chain`]), signs checkpoints ([`ledger::signing`]) and
//! commits them with their effect on the per-call rows to a [`store::Store`].
//! [`evidence`] keeps call recordings. [`dashboard`] turns counters into figures. [`verify`] recomputes all
//! of it; [`export`] writes and checks self-verifying export files (and archives with audio), [`report_export`]
//! the same for reports; [`query`] formats records for people and spreadsheets.
//! [`monitor`] gives the admin endpoint the service's [`metrics`] and readiness ([`health`]).

pub mod alerts;
pub mod auth;
pub mod chain;
pub mod dashboard;
pub mod evidence;
pub mod export;
pub mod export_check;
pub mod health;
pub mod ledger;
pub mod mask;
pub mod metrics;
pub mod monitor;
pub mod pattern_search;
pub mod patterns;
pub mod query;
pub mod report_export;
pub mod reports;
pub mod service;
pub mod store;
pub mod verify;
pub mod web;
