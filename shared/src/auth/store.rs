//! Users and refresh-token families in the state table.
//!
//! - `USER#<tenant>#<username>` / `PROFILE`: the user (names are unique per tenant), listed per
//!   tenant through gsi1 (`<tenant>#USERS`). Users created before names were per tenant stay at
//!   `USER#<username>` and are found there too (tenant ids and user names hold no `#`).
//! - `REFRESH#<token id>` / `TOKEN`: one refresh token (only a hash of its secret), single use.
//! - `FAMILY#<family id>` / `FAMILY`: a login's chain of refresh tokens; revoked as a whole on logout
//!   or when a spent token is presented again (reuse means it was stolen).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub user_id: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Bumped when the user is disabled, their roles change or they log out: access tokens
    /// issued before carry an older version and stop working (see `Sessions`).
    #[serde(default)]
    pub token_version: u32,
    pub created_at: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub password_hash: String,
}

impl User {
    /// The user as the API shows it: never the hash.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "username": self.username,
            "user_id": self.user_id,
            "tenant": self.tenant,
            "roles": self.roles,
            "disabled": self.disabled,
            "created_at": self.created_at,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct UserItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(flatten)]
    user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenItem {
    pk: String,
    sk: String,
    secret_hash: String,
    family_id: String,
    username: String,
    used: bool,
    expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no such user {0}")]
    NoSuchUser(String),
    #[error("refresh token is not valid")]
    InvalidRefresh,
    #[error("refresh token was already used; every session of this login has been revoked")]
    RefreshReused,
    #[error("{0}")]
    Backend(String),
}

fn backend(e: impl std::error::Error) -> StoreError {
    StoreError::Backend(DisplayErrorContext(e).to_string())
}

fn key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn conditional_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// How refresh tokens name their user: `<tenant>#<username>`.
pub fn user_ref(tenant: &str, username: &str) -> String {
    format!("{tenant}#{username}")
}

/// A refresh token as handed to the client: `<token id>.<secret>`.
pub struct IssuedRefresh {
    pub token: String,
    pub family_id: String,
}

/// The one spelling of "end this user's access tokens" (with `:zero` and `:one` bound).
const BUMP_TOKEN_VERSION: &str = "token_version = if_not_exists(token_version, :zero) + :one";

#[derive(Clone)]
pub struct AuthStore {
    client: Client,
    table: String,
}

impl AuthStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    pub async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let item = UserItem {
            pk: format!("USER#{}", user_ref(&user.tenant, &user.username)),
            sk: "PROFILE".into(),
            gsi1pk: format!("{}#USERS", user.tenant),
            gsi1sk: user.username.clone(),
            user,
        };
        let username = item.user.username.clone();
        if self.legacy(&item.user.tenant, &username).await?.is_some() {
            return Err(StoreError::UserExists(username));
        }
        let item = serde_dynamo::to_item(&item).map_err(|e| StoreError::Backend(e.to_string()))?;
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(StoreError::UserExists(username)),
            Err(e) => Err(backend(e)),
        }
    }

    /// The user `username` of `tenant`; another tenant's user of that name is no user.
    pub async fn user(&self, tenant: &str, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self.locate(tenant, username).await?.map(|(_, u)| u))
    }

    /// The user a refresh token was issued to ([`user_ref`], or a bare name from before).
    pub async fn user_by_ref(&self, reference: &str) -> Result<Option<User>, StoreError> {
        match reference.split_once('#') {
            Some((tenant, username)) => self.user(tenant, username).await,
            None => Ok(self
                .get_user_item(format!("USER#{reference}"))
                .await?
                .map(|u| u.user)),
        }
    }

    /// Where the user's item is, and the user.
    async fn locate(
        &self,
        tenant: &str,
        username: &str,
    ) -> Result<Option<(String, User)>, StoreError> {
        // Both keys are read, always: the answer's timing does not tell whether a name exists.
        let pk = format!("USER#{}", user_ref(tenant, username));
        let (current, legacy) = tokio::join!(
            self.get_user_item(pk.clone()),
            self.legacy(tenant, username)
        );
        if let Some(item) = current? {
            return Ok(Some((pk, item.user)));
        }
        legacy
    }

    /// A user from before names were per tenant, by name alone (logins that name no tenant).
    pub async fn user_without_tenant(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .get_user_item(format!("USER#{username}"))
            .await?
            .filter(|item| item.user.username == username)
            .map(|item| item.user))
    }

    /// A user of `tenant` created before names were per tenant.
    async fn legacy(
        &self,
        tenant: &str,
        username: &str,
    ) -> Result<Option<(String, User)>, StoreError> {
        let pk = format!("USER#{username}");
        Ok(self
            .get_user_item(pk.clone())
            .await?
            .filter(|item| item.user.tenant == tenant)
            .map(|item| (pk, item.user)))
    }

    async fn get_user_item(&self, pk: String) -> Result<Option<UserItem>, StoreError> {
        crate::aws::get_item::<UserItem>(&self.client, &self.table, key(pk, "PROFILE"))
            .await
            .map_err(StoreError::Backend)
    }

    /// Users of one tenant, by username, one page at a time (`after` is the last username seen).
    pub async fn users(
        &self,
        tenant: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<(Vec<User>, Option<String>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", AttributeValue::S(format!("{tenant}#USERS")))
            .limit(limit);
        if let Some(after) = after {
            query = query
                .exclusive_start_key("gsi1pk", AttributeValue::S(format!("{tenant}#USERS")))
                .exclusive_start_key("gsi1sk", AttributeValue::S(after.to_owned()))
                .exclusive_start_key(
                    "pk",
                    AttributeValue::S(format!("USER#{}", user_ref(tenant, after))),
                )
                .exclusive_start_key("sk", AttributeValue::S("PROFILE".into()));
        }
        let out = query.send().await.map_err(backend)?;
        let users = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| serde_dynamo::from_item::<_, UserItem>(i).map(|u| u.user))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let next = out
            .last_evaluated_key
            .and(users.last().map(|u| u.username.clone()));
        Ok((users, next))
    }

    /// Sets `disabled` and/or `roles` of a user in `tenant`; a user of another tenant is "no such user".
    pub async fn update_user(
        &self,
        tenant: &str,
        username: &str,
        disabled: Option<bool>,
        roles: Option<Vec<String>>,
    ) -> Result<User, StoreError> {
        let Some((pk, current)) = self.locate(tenant, username).await? else {
            return Err(StoreError::NoSuchUser(username.to_owned()));
        };
        let mut sets = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "PROFILE")))
            .condition_expression("attribute_exists(pk) AND tenant = :tenant")
            .expression_attribute_values(":tenant", AttributeValue::S(tenant.to_owned()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        if let Some(d) = disabled {
            sets.push("disabled = :d");
            req = req.expression_attribute_values(":d", AttributeValue::Bool(d));
        }
        if disabled.is_some() || roles.is_some() {
            sets.push(BUMP_TOKEN_VERSION);
            req = req
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()));
        }
        if let Some(r) = roles {
            sets.push("#roles = :r");
            req = req
                .expression_attribute_names("#roles", "roles")
                .expression_attribute_values(
                    ":r",
                    AttributeValue::L(r.into_iter().map(AttributeValue::S).collect()),
                );
        }
        if sets.is_empty() {
            return Ok(current);
        }
        match req
            .update_expression(format!("SET {}", sets.join(", ")))
            .send()
            .await
        {
            Ok(out) => serde_dynamo::from_item::<_, UserItem>(out.attributes.unwrap_or_default())
                .map(|u| u.user)
                .map_err(|e| StoreError::Backend(e.to_string())),
            Err(e) if conditional_failed(&e) => Err(StoreError::NoSuchUser(username.to_owned())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn put_token(
        &self,
        family_id: &str,
        username: &str,
        expires_at: i64,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let item = TokenItem {
            pk: format!("REFRESH#{id}"),
            sk: "TOKEN".into(),
            secret_hash: sha256(&secret),
            family_id: family_id.to_owned(),
            username: username.to_owned(),
            used: false,
            expires_at,
        };
        let item = serde_dynamo::to_item(&item).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(format!("{id}.{secret}"))
    }

    /// Starts a new family (a login) with its first refresh token.
    pub async fn new_family(
        &self,
        username: &str,
        expires_at: i64,
    ) -> Result<IssuedRefresh, StoreError> {
        let family_id = uuid::Uuid::new_v4().simple().to_string();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(
                [
                    ("pk", AttributeValue::S(format!("FAMILY#{family_id}"))),
                    ("sk", AttributeValue::S("FAMILY".into())),
                    ("username", AttributeValue::S(username.to_owned())),
                    ("revoked", AttributeValue::Bool(false)),
                    ("expires_at", AttributeValue::N(expires_at.to_string())),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ))
            .send()
            .await
            .map_err(backend)?;
        let token = self.put_token(&family_id, username, expires_at).await?;
        Ok(IssuedRefresh { token, family_id })
    }

    async fn family_revoked(&self, family_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("FAMILY#{family_id}"), "FAMILY")))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(match out.item.as_ref().and_then(|i| i.get("revoked")) {
            Some(AttributeValue::Bool(b)) => *b,
            _ => true, // unknown family: treat as revoked
        })
    }

    pub async fn revoke_family(&self, family_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("FAMILY#{family_id}"), "FAMILY")))
            .update_expression("SET revoked = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if conditional_failed(&e) {
                    Ok(())
                } else {
                    Err(backend(e))
                }
            })
    }

    async fn token(&self, presented: &str, now: i64) -> Result<TokenItem, StoreError> {
        let (id, secret) = presented
            .split_once('.')
            .ok_or(StoreError::InvalidRefresh)?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::InvalidRefresh);
        }
        let item: TokenItem = crate::aws::get_item(
            &self.client,
            &self.table,
            key(format!("REFRESH#{id}"), "TOKEN"),
        )
        .await
        .map_err(StoreError::Backend)?
        .ok_or(StoreError::InvalidRefresh)?;
        // Compare hashes, not secrets: equal-length hex, and the stored side never holds the secret.
        if item.secret_hash != sha256(secret) || item.expires_at <= now {
            return Err(StoreError::InvalidRefresh);
        }
        Ok(item)
    }

    /// Spends `presented` and returns (the user's reference, family, next token). A second use of a spent
    /// token revokes its whole family.
    pub async fn rotate(
        &self,
        presented: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(String, IssuedRefresh), StoreError> {
        let item = self.token(presented, now).await?;
        if self.family_revoked(&item.family_id).await? {
            return Err(StoreError::InvalidRefresh);
        }
        let spent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(item.pk.clone(), "TOKEN")))
            .update_expression("SET used = :t")
            .condition_expression("used = :f")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        match spent {
            Ok(_) => {}
            Err(e) if conditional_failed(&e) => {
                self.revoke_family(&item.family_id).await?;
                return Err(StoreError::RefreshReused);
            }
            Err(e) => return Err(backend(e)),
        }
        let token = self
            .put_token(&item.family_id, &item.username, expires_at)
            .await?;
        Ok((
            item.username,
            IssuedRefresh {
                token,
                family_id: item.family_id,
            },
        ))
    }

    /// Logout: revokes the family of a valid refresh token, and ends the user's access tokens
    /// (every session of theirs: an access token does not say which login it came from).
    pub async fn logout(&self, presented: &str, now: i64) -> Result<(), StoreError> {
        let item = self.token(presented, now).await?;
        self.revoke_family(&item.family_id).await?;
        let pk = match item.username.split_once('#') {
            Some((tenant, username)) => match self.locate(tenant, username).await? {
                Some((pk, _)) => pk,
                None => return Ok(()),
            },
            None => format!("USER#{}", item.username),
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "PROFILE")))
            .update_expression(format!("SET {BUMP_TOKEN_VERSION}"))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if conditional_failed(&e) {
                    Ok(())
                } else {
                    Err(backend(e))
                }
            })
    }
}
