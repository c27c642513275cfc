//! The service account controller: every namespace has a `default`
//! ServiceAccount, made when the namespace is and made again if deleted,
//! so pods that name none always run as one.

use serde_json::{Value, json};
use skiff_api::kinds::account::DEFAULT_SERVICE_ACCOUNT;
use skiff_api::{API_VERSION, Kind};

use super::reconciler::{Action, Controller};
use crate::store::{ObjectKey, Store, StoreError, Write};

pub struct ServiceAccounts {
    pub store: Store,
}

impl Controller for ServiceAccounts {
    const NAME: &'static str = "serviceaccounts";
    const KIND: Kind = Kind::Namespace;
    const WATCHES: &'static [Kind] = &[Kind::ServiceAccount];

    async fn wakes(&self, _kind: Kind, account: &Value) -> Result<Vec<ObjectKey>, StoreError> {
        let namespace = account["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let name = account["metadata"]["name"].as_str().unwrap_or_default();
        Ok((name == DEFAULT_SERVICE_ACCOUNT)
            .then(|| ObjectKey::namespace(namespace))
            .into_iter()
            .collect())
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, StoreError> {
        let Some(namespace) = self.store.get(key).await? else {
            return Ok(Action::Done);
        };
        // A namespace being deleted takes its accounts with it.
        if !namespace["metadata"]["deletionTimestamp"].is_null() {
            return Ok(Action::Done);
        }
        let account = ObjectKey::new(Kind::ServiceAccount, &key.name, DEFAULT_SERVICE_ACCOUNT);
        if self.store.get(&account).await?.is_some() {
            return Ok(Action::Done);
        }
        let object = json!({
            "apiVersion": API_VERSION, "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": key.name},
            "spec": {},
        });
        let object = skiff_api::admit(Kind::ServiceAccount, object)
            .expect("the default service account is admissible");
        match self
            .store
            .write(Write::Create {
                key: account,
                object,
            })
            .await
        {
            // Another term, or a user, made it meanwhile; and a namespace
            // deleted since is no place for one.
            Ok(_) | Err(StoreError::AlreadyExists(_) | StoreError::NamespaceNotFound(_)) => {
                Ok(Action::Done)
            }
            Err(e) => Err(e),
        }
    }
}
