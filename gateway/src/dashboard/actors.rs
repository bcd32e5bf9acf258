//! Who acted, as pages show it: the key's name, with its id on hover. A page looks up the
//! names of all its actors at once, in one query, however many rows they acted in.

use std::collections::{HashMap, HashSet};

use registry::Registry;

use crate::error::ApiError;

/// An actor on a page: the name shown and the id in its `title`. Without a key of that id
/// (the system, an external token's subject) both are the id.
pub(super) struct Actor {
    pub name: String,
    pub id: String,
}

/// Key names by key id, for the actors of one page.
pub(super) struct KeyNames(HashMap<String, String>);

impl KeyNames {
    /// The names of `ids`, in one query. A key is named only if it is a platform admin's or
    /// `tenant_id`'s (a tenant's page shows no other tenant's key names); without a tenant (a
    /// platform admin's page over all of them), every key is named.
    pub async fn look_up<'a>(
        registry: &Registry,
        tenant_id: Option<&str>,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ApiError> {
        let ids: Vec<&str> = ids.into_iter().collect::<HashSet<_>>().into_iter().collect();
        let visible =
            |tenant: &Option<String>| tenant_id.is_none() || tenant.is_none() || tenant.as_deref() == tenant_id;
        let found = registry.keys_by_ids(&ids).await?;
        Ok(Self(found.into_iter().filter(|k| visible(&k.tenant_id)).map(|k| (k.id, k.name)).collect()))
    }

    pub fn actor(&self, id: &str) -> Actor {
        Actor { name: self.0.get(id).cloned().unwrap_or_else(|| id.to_owned()), id: id.to_owned() }
    }
}
