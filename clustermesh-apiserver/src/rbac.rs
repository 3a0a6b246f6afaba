//! etcd users and roles for a cluster's ClusterMesh etcd (after Cilium's `clustermesh-apiserver
//! etcdinit`). With client-certificate authentication, etcd takes the user name from the
//! certificate's CN, so each party gets a certificate whose CN is its user:
//!
//! | user | role | may |
//! |---|---|---|
//! | `root` | `root` | everything (etcd requires it before auth can be enabled) |
//! | `admin-<cluster>` | `admin-<cluster>` | read and write `cilium/` (the cluster's own apiserver) |
//! | `remote` | `remote` | read `cilium/state/`, `cilium/.heartbeat`, this cluster's config key and its synced canaries, nothing else (every remote cluster's agents) |
//!
//! `init_users` is idempotent: existing users and roles are kept, grants are re-applied.

use etcd_client::{Client, Permission, UserAddOptions};

use crate::keys::{BASE_PREFIX, CLUSTER_CONFIG_PREFIX, HEARTBEAT_KEY, STATE_PREFIX, SYNCED_PREFIX};

pub const REMOTE_USER: &str = "remote";

pub fn admin_user(cluster: &str) -> String {
    format!("admin-{cluster}")
}

fn ignore_exists(r: Result<(), etcd_client::Error>) -> Result<(), etcd_client::Error> {
    match r {
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        other => other,
    }
}

/// Creates the users and roles above and enables authentication. Run it with an identity that
/// may administer etcd (before auth is enabled: anyone; after: `root`). Returns what it did.
pub async fn init_users(client: &mut Client, cluster: &str) -> Result<Vec<String>, etcd_client::Error> {
    let mut done = Vec::new();
    let admin = admin_user(cluster);
    for user in ["root", admin.as_str(), REMOTE_USER] {
        ignore_exists(client.user_add(user, "", Some(UserAddOptions::new().with_no_pwd())).await.map(|_| ()))?;
    }
    for role in [admin.as_str(), REMOTE_USER] {
        ignore_exists(client.role_add(role).await.map(|_| ()))?;
    }
    client.user_grant_role("root", "root").await?;
    let base = format!("{BASE_PREFIX}/");
    client.role_grant_permission(admin.as_str(), Permission::read_write(base.as_str()).with_prefix()).await?;
    client.user_grant_role(admin.as_str(), admin.as_str()).await?;
    done.push(format!("user {admin}: read-write {base}*"));
    let reads = [
        (format!("{STATE_PREFIX}/"), true),
        (HEARTBEAT_KEY.to_string(), false),
        (format!("{CLUSTER_CONFIG_PREFIX}/{cluster}"), false),
        (format!("{SYNCED_PREFIX}/{cluster}/"), true),
    ];
    for (key, prefix) in &reads {
        let p = Permission::read(key.as_str());
        client.role_grant_permission(REMOTE_USER, if *prefix { p.with_prefix() } else { p }).await?;
        done.push(format!("user {REMOTE_USER}: read {key}{}", if *prefix { "*" } else { "" }));
    }
    client.user_grant_role(REMOTE_USER, REMOTE_USER).await?;
    client.auth_enable().await?;
    done.push("authentication enabled".into());
    Ok(done)
}
