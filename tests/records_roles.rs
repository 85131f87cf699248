//! Roles: each role can do exactly what it may, a revoked token is refused, the
//! loopback rule ends with the first token, and every access is in the access log.

mod records_common;

use courtline::contract::pb::{
    AddTokenRequest, ListAccessRequest, ListCallsRequest, LogEventsRequest, RevokeTokenRequest,
    Role,
};
use records_common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_exactly_what_it_may_and_every_access_is_logged() {
    let db = sqlite_db();
    let service = Service::start(&settings(&db)).await;
    let mut anonymous = service.client(None).await;
    anonymous
        .log_events(LogEventsRequest {
            events: numbered("sb-1", 1, complete_calls([1])),
        })
        .await
        .unwrap();

    // Before any token exists, loopback clients may bootstrap the first admin token.
    let admin_token = anonymous
        .add_token(AddTokenRequest {
            name: "admin-1".into(),
            role: Role::Admin as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    // From then on, no token means no access, even from loopback.
    let refused = anonymous
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut admin = service.client(Some(&admin_token)).await;
    let mut tokens = vec![(Role::Admin, "admin-1".to_owned(), admin_token.clone())];
    for (role, name) in [
        (Role::Switchboard, "sb-1"),
        (Role::Compliance, "zhang.wei"),
        (Role::Auditor, "audit-li"),
    ] {
        let token = admin
            .add_token(AddTokenRequest {
                name: name.into(),
                role: role as i32,
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        tokens.push((role, name.to_owned(), token));
    }
    let duplicate = admin
        .add_token(AddTokenRequest {
            name: "zhang.wei".into(),
            role: Role::Auditor as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let mut node_seq = 10;
    for (role, name, token) in &tokens {
        let mut client = service.client(Some(token)).await;
        for operation in OPERATIONS {
            node_seq += 1;
            let result = attempt(&mut client, operation, node_seq).await;
            if allowed(*role, operation) {
                assert_eq!(
                    result,
                    Ok(()),
                    "{name} ({role:?}) must be allowed {operation}"
                );
            } else {
                assert_eq!(
                    result,
                    Err(Code::PermissionDenied),
                    "{name} ({role:?}) must be refused {operation}"
                );
            }
        }
    }

    // A revoked token is refused.
    admin
        .revoke_token(RevokeTokenRequest {
            name: "zhang.wei".into(),
        })
        .await
        .unwrap();
    let compliance_token = &tokens[2].2;
    let mut revoked = service.client(Some(compliance_token)).await;
    let status = revoked
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let garbage = service
        .client(Some("clt_not-a-token"))
        .await
        .list_calls(ListCallsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    // Revoking every token does not reopen the service to anonymous loopback clients.
    admin
        .revoke_token(RevokeTokenRequest {
            name: "audit-li".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        anonymous
            .list_calls(ListCallsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // Every access is in the access log, with who did it.
    let auditor = admin
        .add_token(AddTokenRequest {
            name: "audit-wang".into(),
            role: Role::Auditor as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut auditor = service.client(Some(&auditor)).await;
    let log = access_log(&mut auditor).await;
    let has = |actor: &str, operation: &str| {
        log.iter()
            .any(|entry| entry.actor == actor && entry.operation == operation)
    };
    for operation in ["ListCalls", "GetCall", "ExportCalls", "FlagCall"] {
        assert!(
            has("zhang.wei", operation),
            "{operation} by zhang.wei missing"
        );
    }
    for operation in ["Verify", "ListGaps", "ListAccess"] {
        assert!(
            has("audit-li", operation),
            "{operation} by audit-li missing"
        );
    }
    assert!(has("loopback", "AddToken"));
    for operation in ["AddToken", "ListTokens", "RevokeToken", "Purge"] {
        assert!(has("admin-1", operation), "{operation} by admin-1 missing");
    }
    let flag = log
        .iter()
        .find(|entry| entry.operation == "FlagCall")
        .unwrap();
    assert!(flag.parameters.contains(&call_id(1)), "{}", flag.parameters);
    assert_eq!(flag.role, "compliance");
    // The auditor's own query is logged too (seen by the next query).
    let again = auditor
        .list_access(ListAccessRequest {
            actor: "audit-wang".into(),
            ..ListAccessRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.entries.len(), 1);
    assert_eq!(again.entries[0].operation, "ListAccess");
    service.stop().await;
}
