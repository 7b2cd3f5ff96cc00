//! The command line, run as the built binary: `--help` and `--version`, the read commands with
//! their exit statuses, on the store of an application served in-process while it serves.

use handler::sync::item::Kind;

use crate::handler_process::{cli_get, cli_list, handler_command};
use crate::helpers::{
    T0, applied, clerk_event, clerk_membership, clerk_organization, spawn_app, user_changed,
};

#[test]
fn help_and_version_on_every_command() {
    let version = format!(" {}", env!("CARGO_PKG_VERSION"));
    for command in [
        &[][..],
        &["serve"],
        &["users"],
        &["users", "get"],
        &["users", "list"],
        &["organizations"],
        &["organizations", "get"],
        &["organizations", "list"],
        &["memberships"],
        &["memberships", "list"],
        &["reconcile"],
    ] {
        // No configuration at all: asking for help must not need any.
        for (flag, expected) in [("--help", "Usage:"), ("--version", version.as_str())] {
            let output = handler_command(&[])
                .args(command)
                .arg(flag)
                .output()
                .unwrap();
            let stdout = String::from_utf8(output.stdout.clone()).unwrap();
            assert!(output.status.success(), "{command:?} {flag}: {output:?}");
            assert!(stdout.contains(expected), "{command:?} {flag}: {stdout}");
        }
    }
}

#[test]
fn users_commands_never_create_a_store_and_tell_store_errors_from_not_found() {
    let dir = tempfile::TempDir::new().unwrap();
    let missing = dir.path().join("typo.sqlite3");
    let env = [("LOCAL_STORE_PATH".to_owned(), missing.display().to_string())];
    for args in [&["users", "get", "user_1"][..], &["users", "list"][..]] {
        let output = handler_command(&env).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no local store"), "{args:?}: {stderr}");
    }
    assert!(!missing.exists(), "a users command created the store");
}

#[tokio::test]
async fn users_get_of_an_impossible_id_is_not_found() {
    let app = spawn_app(&[]).await;
    for id in ["a/b", "", "user?x"] {
        assert_eq!(cli_get(app.env(), "users", id), None, "{id:?}");
    }
}

#[tokio::test]
async fn organizations_and_memberships_are_read_back_by_the_commands() {
    let app = spawn_app(&[]).await;
    for delivery in [
        clerk_event("organization.created", clerk_organization("org_a", T0)),
        clerk_event(
            "organizationMembership.created",
            clerk_membership("orgmem_1", "org_a", "user_1", T0),
        ),
        clerk_event(
            "organizationMembership.created",
            clerk_membership("orgmem_2", "org_a", "user_2", T0),
        ),
        clerk_event(
            "organizationMembership.created",
            clerk_membership("orgmem_3", "org_b", "user_1", T0),
        ),
        user_changed("user.created", "user_1", T0),
    ] {
        assert_eq!(app.deliver(&delivery).await, applied(), "{delivery}");
    }
    let env = app.env();
    let ids = |args: &[&str]| {
        let mut ids: Vec<String> = cli_list(env, args)
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };

    assert_eq!(
        cli_get(env, "organizations", "org_a"),
        app.get(Kind::Organization, "org_a").await
    );
    assert_eq!(
        cli_get(env, "organizations", "user_1"),
        None,
        "a user is not an organization"
    );
    assert_eq!(cli_get(env, "users", "org_a"), None);
    assert_eq!(ids(&["organizations", "list"]), ["org_a"]);
    assert_eq!(
        ids(&["memberships", "list"]),
        ["orgmem_1", "orgmem_2", "orgmem_3"]
    );
    assert_eq!(
        ids(&["memberships", "list", "--organization", "org_a"]),
        ["orgmem_1", "orgmem_2"]
    );
    assert_eq!(
        ids(&["memberships", "list", "--user", "user_1"]),
        ["orgmem_1", "orgmem_3"]
    );
    assert_eq!(
        ids(&[
            "memberships",
            "list",
            "--organization",
            "org_b",
            "--user",
            "user_1"
        ]),
        ["orgmem_3"]
    );
    // An id of the wrong kind is a usage error, not an empty list.
    let output = app.command(&["memberships", "list", "--organization", "user_1"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
}
