//! Callers' numbers and names hidden from roles that have no need to know who called
//! (`[records.web] mask_callers_for`). Pure, so each rule is tested without a browser.
//!
//! Compliance staff see callers: judging a call means knowing who made it. Operators
//! reach only the calls their own reports are about (the records service refuses the
//! others), so they see the callers they spoke to. Auditors check who looked at the
//! records and whether the records are intact, admins run the service: by default
//! neither sees callers. A session under the loopback rule has every role, as for
//! pages, and sees callers.

use crate::contract::pb::Role;
use crate::records::auth::parse_role;

/// The roles masked when `[records.web] mask_callers_for` is not set.
pub const DEFAULT_MASKED_ROLES: [&str; 2] = ["auditor", "admin"];

/// What stands for each hidden character.
const HIDDEN: char = '*';

/// The roles named in `mask_callers_for`; `Err` names the first unknown one.
pub fn masked_roles(names: &[String]) -> Result<Vec<Role>, String> {
    names
        .iter()
        .map(|name| parse_role(name.trim()).ok_or_else(|| name.clone()))
        .collect()
}

/// Whether a visitor with `role` sees callers masked.
pub fn masks_callers(role: Role, under_loopback_rule: bool, masked: &[Role]) -> bool {
    !under_loopback_rule && masked.contains(&role)
}

/// A caller number with its middle hidden, as Chinese forms print mobile numbers
/// (`139****5678`): 11 characters or more keep the first 3 and the last 4, 7 to 10
/// keep 2 at each end, shorter numbers (extensions) are hidden whole.
pub fn mask_number(number: &str) -> String {
    let characters: Vec<char> = number.chars().collect();
    let (lead, tail) = match characters.len() {
        n if n >= 11 => (3, 4),
        7..=10 => (2, 2),
        _ => (0, 0),
    };
    characters
        .iter()
        .enumerate()
        .map(|(index, character)| {
            if index < lead || index + tail >= characters.len() {
                *character
            } else {
                HIDDEN
            }
        })
        .collect()
}

/// A caller's name with all but its first character hidden (`王**`): the family name
/// alone, one mark per hidden character, as Chinese forms print names.
pub fn mask_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(index, character)| if index == 0 { character } else { HIDDEN })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_ends_by_length() {
        assert_eq!(mask_number("13912345678"), "139****5678");
        assert_eq!(mask_number("+8613912345678"), "+86*******5678");
        assert_eq!(mask_number("62345678"), "62****78");
        assert_eq!(mask_number("1234567"), "12***67");
        assert_eq!(mask_number("8001"), "****");
        assert_eq!(mask_number(""), "");
    }

    #[test]
    fn names_keep_the_first_character() {
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("王五（律师）"), "王*****");
        assert_eq!(mask_name("Alice"), "A****");
        assert_eq!(mask_name("李"), "李");
        assert_eq!(mask_name(""), "");
    }

    #[test]
    fn only_listed_roles_outside_the_loopback_rule_are_masked() {
        let masked = masked_roles(&DEFAULT_MASKED_ROLES.map(String::from)).unwrap();
        assert_eq!(masked, vec![Role::Auditor, Role::Admin]);
        assert!(masks_callers(Role::Auditor, false, &masked));
        assert!(masks_callers(Role::Admin, false, &masked));
        assert!(!masks_callers(Role::Admin, true, &masked));
        assert!(!masks_callers(Role::Compliance, false, &masked));
        assert!(!masks_callers(Role::Operator, false, &masked));
        assert_eq!(
            masked_roles(&["compliance".into(), "boss".into()]),
            Err("boss".to_owned())
        );
    }
}
