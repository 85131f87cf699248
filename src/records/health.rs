//! Readiness of a records service run alone (sans-IO): whether switchboards and
//! the console should be sent to it, and if not, why. The admin endpoint's `/readyz`
//! gathers the facts ([`super::monitor`]) and answers 503 with [`Readiness::failing`]
//! as its text.

use super::store::SchemaVersion;

/// What readiness is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The database's migration next to this build's, or why it could not be read
    /// (the database is unreachable).
    pub schema: Result<SchemaVersion, String>,
}

impl Readiness {
    /// One plain-text reason per failing check; empty when ready.
    pub fn failing(&self) -> Vec<String> {
        match &self.schema {
            Err(error) => vec![format!(
                "database: the records database cannot be read: {error}"
            )],
            Ok(SchemaVersion { applied, known }) if applied > known => vec![format!(
                "schema: the records database is at migration {applied}, newer than this courtline's {known}: a newer courtline migrated it; upgrade this one"
            )],
            Ok(SchemaVersion { applied, known }) if applied < known => vec![format!(
                "schema: the records database is at migration {applied}, older than this courtline's {known} (replaced or restored since the start?): restart the service to migrate it"
            )],
            Ok(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(applied: i64) -> Readiness {
        Readiness {
            schema: Ok(SchemaVersion { applied, known: 17 }),
        }
    }

    #[test]
    fn a_reachable_database_at_this_builds_migration_is_ready() {
        assert!(at(17).failing().is_empty());
    }

    #[test]
    fn a_database_another_build_migrated_is_not_ready_and_says_which_way() {
        let newer = at(18).failing();
        assert_eq!(newer.len(), 1);
        assert!(newer[0].starts_with("schema: "), "{newer:?}");
        assert!(newer[0].contains("upgrade this one"), "{newer:?}");
        let older = at(16).failing();
        assert!(older[0].contains("restart the service"), "{older:?}");
    }

    #[test]
    fn an_unreachable_database_is_not_ready() {
        let failing = Readiness {
            schema: Err("connection refused".into()),
        }
        .failing();
        assert_eq!(
            failing,
            vec!["database: the records database cannot be read: connection refused"]
        );
    }
}
