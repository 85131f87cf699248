//! "Three rules" reports (防止干预司法"三个规定"记录报告): the record a staff member
//! files about a call that tried to interfere with a case, next to that call.
//!
//! [`format`] prints them for people and spreadsheets (signed export files:
//! [`super::report_export`]). [`workflow`] decides, without a database, who may do what to a report and what
//! its next version is; the [`super::ledger`] chains each version and the
//! [`super::store`] keeps the latest one per report (the `reports` table) for
//! queries, which [`super::verify`] replays and checks.

pub mod format;
pub mod workflow;
