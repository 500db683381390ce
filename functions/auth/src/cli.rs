//! `auth create-admin --username NAME --tenant TENANT [--billing]`: the operator creates the first
//! admin (with `--billing`, one who may also set the tenant's prices below list, a role no tenant
//! can grant itself). The password comes from `ADMIN_PASSWORD` or the first line of standard
//! input, never from a default.

use std::io::BufRead;

use shared::auth::AuthStore;

pub async fn create_admin(store: &AuthStore, args: &[String]) -> i32 {
    let mut username = None;
    let mut tenant = None;
    let mut roles = vec!["admin".to_owned()];
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--billing" {
            roles.push("billing".into());
            continue;
        }
        match (flag.as_str(), it.next()) {
            ("--username", Some(v)) => username = Some(v.clone()),
            ("--tenant", Some(v)) => tenant = Some(v.clone()),
            _ => {
                eprintln!("usage: auth create-admin --username NAME --tenant TENANT [--billing]  (password from ADMIN_PASSWORD or stdin)");
                return 2;
            }
        }
    }
    let (Some(username), Some(tenant)) = (username, tenant) else {
        eprintln!("usage: auth create-admin --username NAME --tenant TENANT [--billing]  (password from ADMIN_PASSWORD or stdin)");
        return 2;
    };
    let password = match std::env::var("ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("password for {username} (from stdin):");
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim().is_empty() {
                eprintln!("Error: no password given: set ADMIN_PASSWORD or type it on stdin");
                return 2;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    match crate::create(store, &username, &password, &tenant, roles).await {
        Ok(user) => {
            println!("created admin {} in tenant {}", user.username, user.tenant);
            0
        }
        Err(e) if e.kind == "user-exists" => {
            println!("admin {username} already exists; nothing changed");
            0
        }
        Err(e) => {
            eprintln!("Error: {}", e.detail);
            1
        }
    }
}
