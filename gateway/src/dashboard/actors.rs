//! Who acted, as pages show it: the key's name, with its id on hover. A page looks up the
//! names of all its actors at once: its tenant's keys in one listing, and any other key among
//! them (a platform admin's) once each, however many rows it acted in.

use std::collections::{HashMap, HashSet};

use registry::Registry;
use registry::page::{MAX_LIMIT, PageRequest};

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
    /// The names of `ids`: `tenant_id`'s keys from one listing (when there is more than one id);
    /// the rest each looked up once,
    /// and named only if they are platform admins' keys or that tenant's (a tenant's page shows
    /// no other tenant's key names). Without a tenant (a platform admin's page over all of
    /// them), every key is named.
    pub async fn look_up<'a>(
        registry: &Registry,
        tenant_id: Option<&str>,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ApiError> {
        let ids: HashSet<&str> = ids.into_iter().collect();
        let mut names = HashMap::new();
        if let Some(tenant_id) = tenant_id
            && ids.len() > 1
        {
            let keys = registry.list_keys(tenant_id, &PageRequest::first(MAX_LIMIT)).await?;
            names.extend(keys.data.into_iter().map(|k| (k.id, k.name)));
        }
        let others = ids.into_iter().filter(|id| !names.contains_key(*id));
        let found = futures::future::try_join_all(others.into_iter().map(|id| registry.key_by_id(id))).await?;
        let visible =
            |tenant: &Option<String>| tenant_id.is_none() || tenant.is_none() || tenant.as_deref() == tenant_id;
        names.extend(found.into_iter().flatten().filter(|k| visible(&k.tenant_id)).map(|k| (k.id, k.name)));
        Ok(Self(names))
    }

    pub fn actor(&self, id: &str) -> Actor {
        Actor { name: self.0.get(id).cloned().unwrap_or_else(|| id.to_owned()), id: id.to_owned() }
    }
}
